"""Settings of the gateway, read once from ``TOKENLOG_GATEWAY_*`` (and ``KAFKA_BOOTSTRAP_SERVERS``,
``TOKENLOG_LOG_EPOCH``) at start-up and passed into factories."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra.env import env_bool, env_float, env_int, env_str
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from pipeline.settings import MarkerCaps, marker_caps_from_env


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def _worker_models(env: Mapping[str, str]) -> tuple[str, ...]:
    """The models the deployment's worker answers with (its providers' settings)."""
    from pipeline.settings import DemoSettings, OpenAISettings

    demo, openai = DemoSettings(), OpenAISettings()
    return (
        env_str(env, "TOKENLOG_DEMO_MODEL", demo.model),
        env_str(env, "TOKENLOG_OPENAI_MODEL", openai.model),
    )


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything ``python -m gateway`` reads."""

    bootstrap_servers: str = "127.0.0.1:19092"
    kafka_security: KafkaSecurity = PLAINTEXT
    """TLS and SASL of every Kafka client (``KAFKA_SECURITY_PROTOCOL``, ``infra/kafka_client.py``)."""
    host: str = "127.0.0.1"
    port: int = 8000
    sessions_url: str = "http://127.0.0.1:18082"
    """The session-state service (snapshots); when it does not answer, snapshots come from the log."""
    sessions_timeout_s: float = 2.0
    owner_wait_s: float = 5.0
    """A prompt for a conversation whose owner this gateway does not know yet is written, then
    answered 202 or 403 once the session app has applied it (it says who the first prompt's user
    is); after this long without an answer: 503 ``unavailable`` with Retry-After."""
    service_token: str = field(default="", repr=False)
    """The service credential sent to the session-state service (``TOKENLOG_SERVICE_TOKEN``, the
    one it is started with); at least 32 bytes."""
    dev_mode: bool = False
    """Development mode: ``POST /v1/dev/token`` issues tokens. Never on in production."""
    secret: str = field(default="", repr=False)
    """HMAC key of the bearer tokens (shared by every gateway; at least 32 bytes)."""
    token_ttl_s: int = 3600
    allowed_origins: tuple[str, ...] = ()
    """Origins a browser WebSocket may come from; empty: the gateway's own address only."""
    epoch: str = ""
    """The log's epoch in cursors; empty: the Kafka cluster id (what the session service uses)."""
    partitions: tuple[int, ...] = ()
    """Partitions of ``conversation.tokens`` this gateway serves; empty: all (a shard setting)."""
    window_events: int = 2048
    """Events kept in memory per conversation for resumes."""
    window_total_events: int = 100_000
    """Events kept in memory across conversations; least recently active ones go first. About
    1.4 KiB each (the decoded event and its two encoded frames), so ~140 MiB; the soak showed a
    budget of 500,000 letting a gateway grow toward 700 MiB before the first eviction."""
    index_offsets: int = 100_000
    """Offsets of a conversation's events remembered (so a seek reads only those)."""
    index_total_offsets: int = 5_000_000
    conversations: int = 200_000
    """Conversations remembered (window or index); beyond it the least recently active is forgotten."""
    backfill_records: int = 100_000
    """At start-up, the offsets of this many records per partition before the tail reader's start
    are indexed (keys only, ~1 us a record), so resumes from before the start read only their own
    records; 0: none."""
    queue_frames: int = 4096
    """Frames queued per connection; a client further behind is told to resume."""
    heartbeat_s: float = 15.0
    """An idle stream (SSE and WebSocket) sends a ``heartbeat`` frame this often; the WebSocket's
    ``subscribed`` frame and every heartbeat carry it, and clients treat a link that is silent for
    ``gateway.wire.liveness_s`` of it (2x + 2 s) as dead and resume from their cursor."""
    retry_ms: int = 1000
    """The SSE ``retry:`` hint: how long a browser waits before reconnecting."""
    max_body_bytes: int = 64 * 1024
    max_prompt_chars: int = 32 * 1024
    max_ws_frame_bytes: int = 64 * 1024
    markers: MarkerCaps = field(default_factory=MarkerCaps)
    """Caps on the demo's prompt markers (the worker's ``TOKENLOG_DEMO_MARKER_*``): above them a
    prompt gets 400 ``invalid_marker``."""
    prompt_rate_per_min: float = 60.0
    """Sustained prompts per user per minute (a token bucket)."""
    prompt_burst: int = 20
    max_connections_per_user: int = 64
    catchup_consumers: int = 4
    """Kafka consumers kept for resumes through the seek path."""
    catchup_timeout_s: float = 10.0
    produce_timeout_s: float = 10.0
    ready_max_lag: int = 10_000
    """Readiness: the tail reader is at most this many events behind in every partition."""
    shutdown_grace_s: float = 5.0
    gc_freeze: bool = True
    """Once started, move every object the process holds by then (the imported libraries, mostly)
    out of the collector's reach (``gc.freeze``): a full collection then walks only what serving
    created, not the whole heap, and pauses the streams for that much less."""
    cancel_rate_per_min: float = 60.0
    """Sustained cancels per user per minute (a token bucket of its own; HTTP and WebSocket)."""
    cancel_burst: int = 20
    ws_frame_rate_per_min: float = 600.0
    """Sustained WebSocket frames per user per minute other than ``subscribe`` (pings, prompts,
    cancels, bad frames); a socket over it gets ``rate_limited`` and is closed."""
    ws_frame_burst: int = 120
    ws_max_invalid_frames: int = 10
    """Invalid frames a WebSocket may send; the next one closes it (4400)."""
    ws_subscribe_timeout_s: float = 30.0
    """A WebSocket that has not subscribed this long after the upgrade is closed (pings do not
    extend it)."""
    reads_per_user: int = 4
    """Catch-up and snapshot reads of the log (a catch-up consumer held) one user may have running
    at once; more get 429 ``too_many_reads``."""
    catchup_acquire_timeout_s: float = 2.0
    """How long a read waits for a free catch-up consumer before it gets 503 ``unavailable``."""
    header_timeout_s: float = 10.0
    """A connection that has not sent a request's complete headers this long after it opened (or
    after the request began) is closed (slowloris)."""
    body_timeout_s: float = 10.0
    """A request body not complete this long after its headers is answered 408."""
    connections_per_ip: int = 256
    """Open TCP connections per client address (0: no cap); the next gets 429 and is closed."""
    connection_cap_exempt: tuple[str, ...] = ("127.0.0.1", "::1")
    """Client addresses the per-address cap does not apply to: a reverse proxy on this host
    carries every client on one address (and the bench's clients run here)."""
    models: tuple[str, ...] = field(default_factory=lambda: _worker_models({}))
    """Models a prompt may name (an empty ``model`` means the worker's default); from_env's
    default: the worker's models (``TOKENLOG_DEMO_MODEL``, ``TOKENLOG_OPENAI_MODEL``)."""
    max_output_tokens: int = 4096
    """The largest ``parameters.max_tokens`` a prompt may ask for."""
    allowed_hosts: tuple[str, ...] = ()
    """Host headers accepted besides loopback (``127.0.0.1``, ``localhost``, ``[::1]`` with the
    gateway's port); checked in development mode, and always once set (DNS rebinding)."""
    dev_mode_allow_remote: bool = False
    """Development mode on a non-loopback address: refused at start-up unless this is set."""
    send_buffer_bytes: int = 0
    """SO_SNDBUF of client connections (inherited from the listening socket); 0: the kernel's
    autotuning. A small value bounds kernel memory per slow client, at some throughput cost."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        d = cls()
        partitions = tuple(int(p) for p in _csv(env_str(env, "TOKENLOG_GATEWAY_PARTITIONS", "")))
        return cls(
            bootstrap_servers=env_str(env, "KAFKA_BOOTSTRAP_SERVERS", d.bootstrap_servers),
            kafka_security=KafkaSecurity.from_env(env),
            host=env_str(env, "TOKENLOG_GATEWAY_HOST", d.host),
            port=env_int(env, "TOKENLOG_GATEWAY_PORT", d.port),
            sessions_url=env_str(env, "TOKENLOG_GATEWAY_SESSIONS_URL", d.sessions_url).rstrip("/"),
            sessions_timeout_s=env_float(env, "TOKENLOG_GATEWAY_SESSIONS_TIMEOUT_S", d.sessions_timeout_s),
            owner_wait_s=env_float(env, "TOKENLOG_GATEWAY_OWNER_WAIT_S", d.owner_wait_s),
            service_token=env_str(env, "TOKENLOG_SERVICE_TOKEN", d.service_token),
            dev_mode=env_bool(env, "TOKENLOG_GATEWAY_DEV_MODE", d.dev_mode),
            secret=env_str(env, "TOKENLOG_GATEWAY_SECRET", d.secret),
            token_ttl_s=env_int(env, "TOKENLOG_GATEWAY_TOKEN_TTL_S", d.token_ttl_s),
            allowed_origins=_csv(env_str(env, "TOKENLOG_GATEWAY_ALLOWED_ORIGINS", "")),
            epoch=env_str(env, "TOKENLOG_LOG_EPOCH", d.epoch),
            partitions=partitions,
            window_events=env_int(env, "TOKENLOG_GATEWAY_WINDOW_EVENTS", d.window_events),
            window_total_events=env_int(env, "TOKENLOG_GATEWAY_WINDOW_TOTAL_EVENTS", d.window_total_events),
            index_offsets=env_int(env, "TOKENLOG_GATEWAY_INDEX_OFFSETS", d.index_offsets),
            index_total_offsets=env_int(env, "TOKENLOG_GATEWAY_INDEX_TOTAL_OFFSETS", d.index_total_offsets),
            conversations=env_int(env, "TOKENLOG_GATEWAY_CONVERSATIONS", d.conversations),
            backfill_records=env_int(env, "TOKENLOG_GATEWAY_BACKFILL_RECORDS", d.backfill_records),
            queue_frames=env_int(env, "TOKENLOG_GATEWAY_QUEUE_FRAMES", d.queue_frames),
            heartbeat_s=env_float(env, "TOKENLOG_GATEWAY_HEARTBEAT_S", d.heartbeat_s),
            retry_ms=env_int(env, "TOKENLOG_GATEWAY_RETRY_MS", d.retry_ms),
            max_body_bytes=env_int(env, "TOKENLOG_GATEWAY_MAX_BODY_BYTES", d.max_body_bytes),
            max_prompt_chars=env_int(env, "TOKENLOG_GATEWAY_MAX_PROMPT_CHARS", d.max_prompt_chars),
            max_ws_frame_bytes=env_int(env, "TOKENLOG_GATEWAY_MAX_WS_FRAME_BYTES", d.max_ws_frame_bytes),
            markers=marker_caps_from_env(env),
            prompt_rate_per_min=env_float(env, "TOKENLOG_GATEWAY_PROMPT_RATE_PER_MIN", d.prompt_rate_per_min),
            prompt_burst=env_int(env, "TOKENLOG_GATEWAY_PROMPT_BURST", d.prompt_burst),
            max_connections_per_user=env_int(
                env, "TOKENLOG_GATEWAY_MAX_CONNECTIONS_PER_USER", d.max_connections_per_user
            ),
            catchup_consumers=env_int(env, "TOKENLOG_GATEWAY_CATCHUP_CONSUMERS", d.catchup_consumers),
            catchup_timeout_s=env_float(env, "TOKENLOG_GATEWAY_CATCHUP_TIMEOUT_S", d.catchup_timeout_s),
            produce_timeout_s=env_float(env, "TOKENLOG_GATEWAY_PRODUCE_TIMEOUT_S", d.produce_timeout_s),
            ready_max_lag=env_int(env, "TOKENLOG_GATEWAY_READY_MAX_LAG", d.ready_max_lag),
            gc_freeze=env_bool(env, "TOKENLOG_GATEWAY_GC_FREEZE", d.gc_freeze),
            shutdown_grace_s=env_float(env, "TOKENLOG_GATEWAY_SHUTDOWN_GRACE_S", d.shutdown_grace_s),
            send_buffer_bytes=env_int(env, "TOKENLOG_GATEWAY_SEND_BUFFER_BYTES", d.send_buffer_bytes),
            cancel_rate_per_min=env_float(env, "TOKENLOG_GATEWAY_CANCEL_RATE_PER_MIN", d.cancel_rate_per_min),
            cancel_burst=env_int(env, "TOKENLOG_GATEWAY_CANCEL_BURST", d.cancel_burst),
            ws_frame_rate_per_min=env_float(
                env, "TOKENLOG_GATEWAY_WS_FRAME_RATE_PER_MIN", d.ws_frame_rate_per_min
            ),
            ws_frame_burst=env_int(env, "TOKENLOG_GATEWAY_WS_FRAME_BURST", d.ws_frame_burst),
            ws_max_invalid_frames=env_int(
                env, "TOKENLOG_GATEWAY_WS_MAX_INVALID_FRAMES", d.ws_max_invalid_frames
            ),
            ws_subscribe_timeout_s=env_float(
                env, "TOKENLOG_GATEWAY_WS_SUBSCRIBE_TIMEOUT_S", d.ws_subscribe_timeout_s
            ),
            reads_per_user=env_int(env, "TOKENLOG_GATEWAY_READS_PER_USER", d.reads_per_user),
            catchup_acquire_timeout_s=env_float(
                env, "TOKENLOG_GATEWAY_CATCHUP_ACQUIRE_TIMEOUT_S", d.catchup_acquire_timeout_s
            ),
            header_timeout_s=env_float(env, "TOKENLOG_GATEWAY_HEADER_TIMEOUT_S", d.header_timeout_s),
            body_timeout_s=env_float(env, "TOKENLOG_GATEWAY_BODY_TIMEOUT_S", d.body_timeout_s),
            connections_per_ip=env_int(env, "TOKENLOG_GATEWAY_CONNECTIONS_PER_IP", d.connections_per_ip),
            connection_cap_exempt=_csv(
                env_str(env, "TOKENLOG_GATEWAY_CONNECTION_CAP_EXEMPT", ",".join(d.connection_cap_exempt))
            ),
            models=_csv(env_str(env, "TOKENLOG_GATEWAY_MODELS", ",".join(_worker_models(env)))),
            max_output_tokens=env_int(env, "TOKENLOG_GATEWAY_MAX_OUTPUT_TOKENS", d.max_output_tokens),
            allowed_hosts=_csv(env_str(env, "TOKENLOG_GATEWAY_ALLOWED_HOSTS", "")),
            dev_mode_allow_remote=env_bool(
                env, "TOKENLOG_GATEWAY_DEV_MODE_ALLOW_REMOTE", d.dev_mode_allow_remote
            ),
        )

    def check(self) -> None:
        """Refuse settings the gateway cannot run safely with."""
        if len(self.secret.encode()) < 32:
            raise ValueError(
                "TOKENLOG_GATEWAY_SECRET must be set to at least 32 bytes (every gateway shares it)"
            )
        if len(self.service_token.encode()) < 32:
            raise ValueError(
                "TOKENLOG_SERVICE_TOKEN must be set to at least 32 bytes: the session-state "
                "service's credential (make run makes one in .local/service-token)"
            )
        for name in (
            "window_events",
            "queue_frames",
            "catchup_consumers",
            "max_body_bytes",
            "reads_per_user",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.heartbeat_s > 0:  # 0 would spin an idle stream's writer (and NaN never ticks)
            raise ValueError("heartbeat_s must be above 0")
        if self.dev_mode and not is_loopback(self.host) and not self.dev_mode_allow_remote:
            raise ValueError(
                f"development mode issues a token to anyone who asks: it listens on loopback only, "
                f"not {self.host!r} (set TOKENLOG_GATEWAY_DEV_MODE_ALLOW_REMOTE=true to override)"
            )

    @property
    def hosts(self) -> frozenset[str]:
        """The Host names accepted (lowercase): loopback ones, and the allowlist (whose entries may
        name a port too)."""
        return frozenset({"127.0.0.1", "localhost", "[::1]"} | {h.lower() for h in self.allowed_hosts})

    def host_allowed(self, header: str) -> bool:
        """Whether a request's ``Host`` is served. A loopback name with any port is: DNS
        rebinding needs a page's own name to resolve here, and no page elsewhere can make a
        browser send a loopback name, whatever the port (a proxy on loopback, as the tests use,
        forwards its own port)."""
        host = header.lower()
        name = host.rsplit(":", 1)[0] if host.rfind(":") > host.rfind("]") else host
        return host in self.hosts or name in self.hosts

    @property
    def checks_host(self) -> bool:
        return self.dev_mode or bool(self.allowed_hosts)

    @property
    def origins(self) -> frozenset[str]:
        """The WebSocket Origin allowlist in force."""
        if self.allowed_origins:
            return frozenset(self.allowed_origins)
        own = {f"http://{self.host}:{self.port}"}
        if self.host in ("127.0.0.1", "::1", "localhost"):
            own |= {f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}"}
        return frozenset(own)
