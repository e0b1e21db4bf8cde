"""The services ``make run`` starts beside the broker, in start order.

Each later piece of the system (generation worker, session-state app, gateway) adds its
``ServiceSpec`` here; ``infra.run`` starts them as subprocesses, waits until each is ready,
prints where to look, and stops them in reverse order. The test harness starts the same
specs on free ports.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


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


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL we built
                return bool(response.status == 200)
        except OSError:
            return False

    return probe


def services(bootstrap: str, env: Mapping[str, str] | None = None) -> tuple[ServiceSpec, ...]:
    """Every service of the system so far, in start order."""
    env = os.environ if env is None else env
    worker_port = int(env.get("TOKENLOG_WORKER_HTTP_PORT", "18081"))
    worker_url = f"http://127.0.0.1:{worker_port}"
    sessions_port = int(env.get("TOKENLOG_SESSIONS_PORT", "18082"))
    sessions_url = f"http://127.0.0.1:{sessions_port}"
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
    )
