"""Settings of the generation worker, read once from ``TOKENLOG_WORKER_*`` (and the Kafka and
provider variables) at start-up and passed into factories."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from infra.env import env_bool, env_float, env_int, env_str
from infra.kafka_client import PLAINTEXT, KafkaSecurity


@dataclass(frozen=True, slots=True)
class MarkerCaps:
    """Bounds on the demo provider's prompt markers (``pipeline/providers/markers.py``), applied by
    the demo provider and, with the same ``TOKENLOG_DEMO_*`` variables, by the gateway (a 400
    ``invalid_marker`` above them)."""

    max_tokens: int = 20_000
    """Largest ``[[tokens=N]]`` (and ``fail_after``, ``exit_after``)."""
    min_rate: float = 1.0
    """Smallest ``[[rate=R]]`` other than 0 (0: as fast as possible)."""
    max_rate: float = 1000.0
    """Largest ``[[rate=R]]``."""
    max_seconds: float = 600.0
    """Longest scripted answer, ``tokens / rate``, when both markers are given."""
    test_markers: bool = False
    """Honour the test-only ``[[exit_after=N]]`` marker (the worker process exits after N tokens).
    Never on outside tests."""


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """The deterministic demo generator (no network)."""

    tokens_per_s: float = 40.0
    """Token rate; 0 means as fast as possible."""
    min_tokens: int = 40
    """Shortest answer, in tokens."""
    max_tokens: int = 160
    """Longest answer, in tokens (the prompt picks a length in between)."""
    model: str = "tokenlog-demo-1"
    markers: MarkerCaps = field(default_factory=MarkerCaps)


@dataclass(frozen=True, slots=True)
class OpenAISettings:
    """An OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama, llama.cpp)."""

    base_url: str = ""
    """Required with ``provider=openai`` (no default: the gateway's own port was one); https, or
    http to a loopback host only (``check_base_url``)."""
    api_key: str = field(default="", repr=False)
    model: str = "gpt-4o-mini"
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 60.0
    """Longest wait for the first streamed chunk."""
    idle_timeout_s: float = 30.0
    """Longest wait between two streamed chunks."""
    max_retries: int = 3
    """Retries of transient errors before the first token (connect, 429, 5xx)."""
    retry_base_s: float = 0.5
    continue_prefix: bool = True
    """After a failover, send the partial answer as an assistant prefix to continue it
    (vLLM ``continue_final_message``); off: restart the answer visibly."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything ``python -m pipeline worker`` reads."""

    bootstrap_servers: str = "127.0.0.1:19092"
    kafka_security: KafkaSecurity = PLAINTEXT
    """TLS and SASL of every Kafka client (``KAFKA_SECURITY_PROTOCOL``, ``infra/kafka_client.py``)."""
    group_id: str = "tokenlog-generation"
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    provider: str = "demo"
    """``demo`` or ``openai``."""
    max_in_flight: int = 256
    """Answers generated at once by this process (across all conversations)."""
    max_buffered_prompts: int = 2048
    """Prompts waiting in this process before it pauses fetching."""
    coalesce_ms: float = 15.0
    """Deltas produced within this window go out as one TokenDelta; 0 sends each at once."""
    commit_interval_ms: int = 200
    shutdown_grace_s: float = 10.0
    """On SIGTERM, in-flight answers get this long to finish; the rest are handed over."""
    http_host: str = "127.0.0.1"
    http_port: int = 0
    """Health and metrics; 0 picks a free port (printed at start)."""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    poison_attempts: int = 3
    """A prompt whose generation was lost this many times (its worker killed or stalled, not a
    graceful hand-over) ends with ``ResponseFailed(poison_prompt)`` instead of a new attempt."""
    answer_idle_timeout_s: float = 300.0
    """An answer that gets no piece from its provider for this long is failed by the worker
    (``provider_stalled``), freeing its slot. Above the OpenAI provider's own first-token wait
    with its retries (4 x 60 s by default)."""
    demo: DemoSettings = field(default_factory=DemoSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        d, dd, od = cls(), DemoSettings(), OpenAISettings()
        provider = env_str(env, "TOKENLOG_WORKER_PROVIDER", d.provider)
        if provider not in ("demo", "openai"):
            raise ValueError(f"TOKENLOG_WORKER_PROVIDER must be demo or openai, got {provider!r}")
        openai = OpenAISettings(
            base_url=env_str(env, "TOKENLOG_OPENAI_BASE_URL", od.base_url).rstrip("/"),
            api_key=env_str(env, "TOKENLOG_OPENAI_API_KEY", od.api_key),
            model=env_str(env, "TOKENLOG_OPENAI_MODEL", od.model),
            connect_timeout_s=env_float(env, "TOKENLOG_OPENAI_CONNECT_TIMEOUT_S", od.connect_timeout_s),
            first_token_timeout_s=env_float(
                env, "TOKENLOG_OPENAI_FIRST_TOKEN_TIMEOUT_S", od.first_token_timeout_s
            ),
            idle_timeout_s=env_float(env, "TOKENLOG_OPENAI_IDLE_TIMEOUT_S", od.idle_timeout_s),
            max_retries=env_int(env, "TOKENLOG_OPENAI_MAX_RETRIES", od.max_retries),
            retry_base_s=env_float(env, "TOKENLOG_OPENAI_RETRY_BASE_S", od.retry_base_s),
            continue_prefix=env_bool(env, "TOKENLOG_OPENAI_CONTINUE_PREFIX", od.continue_prefix),
        )
        if provider == "openai":
            check_base_url(openai.base_url)
        poison_attempts = env_int(env, "TOKENLOG_WORKER_POISON_ATTEMPTS", d.poison_attempts)
        if poison_attempts < 1:
            raise ValueError(f"TOKENLOG_WORKER_POISON_ATTEMPTS must be at least 1, got {poison_attempts}")
        return cls(
            bootstrap_servers=env_str(env, "KAFKA_BOOTSTRAP_SERVERS", d.bootstrap_servers),
            kafka_security=KafkaSecurity.from_env(env),
            group_id=env_str(env, "TOKENLOG_WORKER_GROUP", d.group_id),
            worker_id=env_str(env, "TOKENLOG_WORKER_ID", d.worker_id),
            provider=provider,
            max_in_flight=env_int(env, "TOKENLOG_WORKER_MAX_IN_FLIGHT", d.max_in_flight),
            max_buffered_prompts=env_int(env, "TOKENLOG_WORKER_MAX_BUFFERED", d.max_buffered_prompts),
            coalesce_ms=env_float(env, "TOKENLOG_WORKER_COALESCE_MS", d.coalesce_ms),
            commit_interval_ms=env_int(env, "TOKENLOG_WORKER_COMMIT_INTERVAL_MS", d.commit_interval_ms),
            shutdown_grace_s=env_float(env, "TOKENLOG_WORKER_SHUTDOWN_GRACE_S", d.shutdown_grace_s),
            http_host=env_str(env, "TOKENLOG_WORKER_HTTP_HOST", d.http_host),
            http_port=env_int(env, "TOKENLOG_WORKER_HTTP_PORT", d.http_port),
            session_timeout_ms=env_int(env, "TOKENLOG_WORKER_SESSION_TIMEOUT_MS", d.session_timeout_ms),
            heartbeat_interval_ms=env_int(env, "TOKENLOG_WORKER_HEARTBEAT_MS", d.heartbeat_interval_ms),
            poison_attempts=poison_attempts,
            answer_idle_timeout_s=env_float(
                env, "TOKENLOG_WORKER_ANSWER_IDLE_TIMEOUT_S", d.answer_idle_timeout_s
            ),
            demo=DemoSettings(
                tokens_per_s=env_float(env, "TOKENLOG_DEMO_TOKENS_PER_S", dd.tokens_per_s),
                min_tokens=env_int(env, "TOKENLOG_DEMO_MIN_TOKENS", dd.min_tokens),
                max_tokens=env_int(env, "TOKENLOG_DEMO_MAX_TOKENS", dd.max_tokens),
                model=env_str(env, "TOKENLOG_DEMO_MODEL", dd.model),
                markers=marker_caps_from_env(env),
            ),
            openai=openai,
        )


def marker_caps_from_env(env: Mapping[str, str]) -> MarkerCaps:
    """The demo markers' caps from ``TOKENLOG_DEMO_*`` (read by the worker and the gateway alike)."""
    d = MarkerCaps()
    caps = MarkerCaps(
        max_tokens=env_int(env, "TOKENLOG_DEMO_MARKER_MAX_TOKENS", d.max_tokens),
        min_rate=env_float(env, "TOKENLOG_DEMO_MARKER_MIN_RATE", d.min_rate),
        max_rate=env_float(env, "TOKENLOG_DEMO_MARKER_MAX_RATE", d.max_rate),
        max_seconds=env_float(env, "TOKENLOG_DEMO_MARKER_MAX_SECONDS", d.max_seconds),
        test_markers=env_bool(env, "TOKENLOG_DEMO_TEST_MARKERS", d.test_markers),
    )
    if caps.max_tokens < 0 or not 0 < caps.min_rate <= caps.max_rate or caps.max_seconds <= 0:
        raise ValueError(
            "TOKENLOG_DEMO_MARKER_*: need MAX_TOKENS >= 0, 0 < MIN_RATE <= MAX_RATE and MAX_SECONDS > 0"
        )
    return caps


_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def check_base_url(url: str) -> None:
    """Refuse an OpenAI base URL that is missing, or that would send the API key in clear text
    off this machine: https anywhere, http only to a loopback host (a local vLLM or Ollama)."""
    if not url:
        raise ValueError(
            "TOKENLOG_OPENAI_BASE_URL must be set with TOKENLOG_WORKER_PROVIDER=openai "
            "(e.g. https://api.openai.com/v1); there is no default"
        )
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS:
        return
    raise ValueError(
        f"TOKENLOG_OPENAI_BASE_URL must be https:// (or http:// to 127.0.0.1, ::1 or localhost), got {url!r}"
    )
