"""The services ``make run`` starts beside the broker, in start order.

Each later piece of the system (generation worker, session-state app, gateway) adds its
``ServiceSpec`` here; ``infra.run`` starts them as subprocesses, waits until each is ready,
prints where to look, and stops them in reverse order. The test harness starts the same
specs on free ports.
"""

from __future__ import annotations

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


def services(bootstrap: str) -> tuple[ServiceSpec, ...]:
    """Every service of the system so far. None yet besides the broker itself: the
    generation worker, the session-state app and the gateway add themselves here."""
    del bootstrap
    return ()
