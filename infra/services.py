"""The services ``make run`` starts beside the broker, in start order.

Each later piece of the system (generation worker, session-state app, gateway) adds its
``ServiceSpec`` here; ``infra.run`` starts them as subprocesses, waits until each is ready,
prints where to look, and stops them in reverse order. The test harness starts the same
specs on free ports.

Each child gets only the environment it needs (``child_env``): the basics of a process (``PATH``,
``HOME``, locale, ``PYTHON*``), the Kafka and topic settings every service shares, the service
credential, and the variables of its own prefixes. So the provider key
(``TOKENLOG_OPENAI_API_KEY``) reaches the generation worker and no other process.
"""

from __future__ import annotations

import os
import secrets
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.settings import REPO_ROOT


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """How to start one service process and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment on top of the supervisor's (settings are passed this way)."""
    ready: Callable[[], bool] | None = None
    """Returns True once the service serves (an HTTP probe, a port); None: ready when started."""
    urls: Mapping[str, str] = field(default_factory=dict)
    """What to print for the user once it is ready (label -> URL)."""
    env_prefixes: tuple[str, ...] = ()
    """The variable prefixes of its own settings it inherits from the supervisor's environment
    (beside ``SHARED_NAMES`` / ``SHARED_PREFIXES``); every other variable is withheld."""


SHARED_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "VIRTUAL_ENV"}
    | {"SSL_CERT_FILE", "SSL_CERT_DIR", "TOKENLOG_SERVICE_TOKEN"}
)
"""Variables every service inherits: what a Python process needs, CA bundles, the service credential."""
SHARED_PREFIXES = ("LC_", "PYTHON", "KAFKA_", "TOKENLOG_KAFKA_", "TOKENLOG_TOPIC_", "TOKENLOG_LOG_")
"""Prefixes every service inherits: locale, interpreter, Kafka clients, topics, the log epoch."""
PROXY_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")
"""Only the worker calls out (to the model provider): only it gets the proxy settings."""


def child_env(spec: ServiceSpec, parent: Mapping[str, str]) -> dict[str, str]:
    """The environment ``spec``'s process starts with: from ``parent`` only the shared variables and
    the service's own prefixes, then the spec's ``env`` on top."""
    inherited = {
        name: value
        for name, value in parent.items()
        if name in SHARED_NAMES or name.startswith(SHARED_PREFIXES + spec.env_prefixes)
    }
    return {**inherited, **spec.env}


def http_ok(url: str, headers: Mapping[str, str] | None = None) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers 200 (to a request with ``headers``)."""

    def probe() -> bool:
        request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - loopback URL we built
        try:
            with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310 - loopback URL we built
                return bool(response.status == 200)
        except OSError:
            return False

    return probe


def kept_secret(path: Path) -> str:
    """A random secret (48 bytes, URL-safe) kept in ``path``: made once, atomically (``O_EXCL``,
    mode 0600, so two starts at once agree on one), read back after."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another start made it first: use theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def dev_secret(path: Path) -> str:
    """The development token key of ``make run``: kept so tokens a browser holds survive a
    restart. Production sets ``TOKENLOG_GATEWAY_SECRET`` instead."""
    return kept_secret(path)


def service_token(path: Path) -> str:
    """The credential the services of ``make run`` present to each other (the gateway to the
    session app), kept in ``path`` like ``dev_secret``. Deployments set ``TOKENLOG_SERVICE_TOKEN``,
    which wins (``services`` reads it first)."""
    return kept_secret(path)


def services(bootstrap: str, env: Mapping[str, str] | None = None) -> tuple[ServiceSpec, ...]:
    """Every service of the system so far, in start order."""
    env = os.environ if env is None else env
    local = REPO_ROOT / ".local"
    token = env.get("TOKENLOG_SERVICE_TOKEN") or service_token(local / "service-token")
    worker_port = int(env.get("TOKENLOG_WORKER_HTTP_PORT", "18081"))
    worker_url = f"http://127.0.0.1:{worker_port}"
    sessions_port = int(env.get("TOKENLOG_SESSIONS_PORT", "18082"))
    sessions_url = f"http://127.0.0.1:{sessions_port}"
    gateway_port = int(env.get("TOKENLOG_GATEWAY_PORT", "8000"))
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    credential = {"Authorization": f"Bearer {token}"}
    return (
        ServiceSpec(
            name="worker",
            argv=(sys.executable, "-m", "pipeline", "worker"),
            env={
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "TOKENLOG_WORKER_HTTP_PORT": str(worker_port),
                "TOKENLOG_SERVICE_TOKEN": token,
                **{name: env[name] for name in PROXY_NAMES if name in env},
            },
            ready=http_ok(f"{worker_url}/readyz", credential),
            urls={"generation worker metrics": f"{worker_url}/metrics"},
            env_prefixes=("TOKENLOG_WORKER_", "TOKENLOG_OPENAI_", "TOKENLOG_DEMO_"),
        ),
        ServiceSpec(
            name="sessions",
            argv=(sys.executable, "-m", "pipeline", "sessions"),
            env={
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "TOKENLOG_SESSIONS_PORT": str(sessions_port),
                "TOKENLOG_SERVICE_TOKEN": token,
            },
            ready=http_ok(f"{sessions_url}/readyz", credential),
            urls={
                "session snapshots": f"{sessions_url}/sessions/<conversation_id> "
                "(needs the service credential: TOKENLOG_SERVICE_TOKEN, kept in .local/service-token)"
            },
            env_prefixes=("TOKENLOG_SESSIONS_",),
        ),
        ServiceSpec(
            name="gateway",
            argv=(sys.executable, "-m", "gateway"),
            env={
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "TOKENLOG_GATEWAY_PORT": str(gateway_port),
                "TOKENLOG_GATEWAY_SESSIONS_URL": sessions_url,
                "TOKENLOG_GATEWAY_DEV_MODE": env.get("TOKENLOG_GATEWAY_DEV_MODE", "true"),
                "TOKENLOG_GATEWAY_SECRET": env.get("TOKENLOG_GATEWAY_SECRET")
                or dev_secret(local / "gateway-dev-secret"),
                "TOKENLOG_SERVICE_TOKEN": token,
            },
            ready=http_ok(f"{gateway_url}/readyz"),
            urls={
                "gateway (open this)": f"{gateway_url}/",
                "API reference": f"{gateway_url}/docs",
                "development token": f"curl -s -X POST {gateway_url}/v1/dev/token "
                "-H 'content-type: application/json' -d '{\"user_id\": \"me\"}'",
                "follow a conversation": f"curl -N '{gateway_url}/v1/conversations/<id>/events"
                "?access_token=<token>'",
            },
            # Beside its own: what it checks prompts against, as the worker reads it (the marker
            # caps, the test-markers switch, the models its allowlist defaults to).
            env_prefixes=(
                "TOKENLOG_GATEWAY_",
                "TOKENLOG_DEMO_MARKER_",
                "TOKENLOG_DEMO_TEST_MARKERS",
                "TOKENLOG_DEMO_MODEL",
                "TOKENLOG_OPENAI_MODEL",
            ),
        ),
    )
