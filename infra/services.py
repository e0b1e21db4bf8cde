"""The services ``make run`` starts beside the broker, in start order.

Each later piece of the system (generation worker, session-state app, gateway) adds its
``ServiceSpec`` here; ``infra.run`` starts them as subprocesses, waits until each is ready,
prints where to look, and stops them in reverse order. The test harness starts the same
specs on free ports.
"""

from __future__ import annotations

import os
import secrets
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


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


def http_ok(url: str, headers: Mapping[str, str] | None = None) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers 200 (to a request with ``headers``)."""

    def probe() -> bool:
        try:
            request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - loopback URL we built
            with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310 - loopback URL we built
                return bool(response.status == 200)
        except OSError:
            return False

    return probe


def service_headers(token: str) -> dict[str, str]:
    """The headers that carry the service credential to the session-state service."""
    return {"Authorization": f"Bearer {token}"}


def dev_secret(path: Path) -> str:
    """The development token key of ``make run``: made once, kept (mode 0600) so tokens a browser
    holds survive a restart. Production sets ``TOKENLOG_GATEWAY_SECRET`` instead."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def services(bootstrap: str, env: Mapping[str, str] | None = None) -> tuple[ServiceSpec, ...]:
    """Every service of the system so far, in start order."""
    env = os.environ if env is None else env
    worker_port = int(env.get("TOKENLOG_WORKER_HTTP_PORT", "18081"))
    worker_url = f"http://127.0.0.1:{worker_port}"
    sessions_port = int(env.get("TOKENLOG_SESSIONS_PORT", "18082"))
    sessions_url = f"http://127.0.0.1:{sessions_port}"
    gateway_port = int(env.get("TOKENLOG_GATEWAY_PORT", "8000"))
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    return (
        ServiceSpec(
            name="worker",
            argv=(sys.executable, "-m", "pipeline", "worker"),
            env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOKENLOG_WORKER_HTTP_PORT": str(worker_port)},
            ready=http_ok(f"{worker_url}/readyz"),
            urls={"generation worker metrics": f"{worker_url}/metrics"},
        ),
        ServiceSpec(
            name="sessions",
            argv=(sys.executable, "-m", "pipeline", "sessions"),
            env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOKENLOG_SESSIONS_PORT": str(sessions_port)},
            ready=http_ok(f"{sessions_url}/readyz"),
            urls={"session snapshots": f"{sessions_url}/sessions/<conversation_id>"},
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
                or dev_secret(Path(__file__).resolve().parents[1] / ".local" / "gateway-dev-secret"),
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
        ),
    )
