"""Keeps the services of ``make run`` up: starts them in order, restarts one that exits.

Each service moves through ``waiting`` (its predecessors have not been ready yet) → ``starting``
(running, readiness probe not yet true) → ``ready``; an exit from ``starting`` or ``ready`` goes
to ``backoff`` for the pause ``RestartPolicy`` decides, then ``starting`` again. A service not
ready within ``ready_timeout_s`` is stopped, which counts as an exit before ready. The policy's
``GiveUp`` ends supervision: ``tick`` returns why, and the caller stops everything.

``tick`` never blocks for long (a readiness probe is one loopback request with a 1 s timeout), so
one service restarting never holds up the supervision of the others.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from infra.process import ManagedProcess
from infra.restarts import GiveUp, History, RestartPolicy
from infra.services import ServiceSpec, child_env


class Phase(StrEnum):
    WAITING = "waiting"
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"


def describe_exit(code: int | None) -> str:
    """``code 1``, or ``code -9 (SIGKILL)`` for a process a signal ended."""
    if code is not None and code < 0:
        try:
            return f"code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"code {code}"


@dataclass
class Supervised:
    """One service, its process and where it stands."""

    spec: ServiceSpec
    proc: ManagedProcess
    phase: Phase = Phase.WAITING
    started_at: float = 0.0
    ready_at: float | None = None
    restart_at: float = 0.0
    history: History = field(default_factory=History)
    ever_ready: bool = False


@dataclass
class Supervisor:
    """Starts ``specs`` in order, each once its predecessor is ready, and keeps them running."""

    specs: Sequence[ServiceSpec]
    parent_env: Mapping[str, str]
    log_dir: Path
    policy: RestartPolicy
    ready_timeout_s: float
    cwd: Path | None = None
    say: Callable[[str], None] = print
    clock: Callable[[], float] = time.monotonic
    services: list[Supervised] = field(default_factory=list)
    announced: bool = False

    def __post_init__(self) -> None:
        for spec in self.specs:
            proc = ManagedProcess(
                spec.name,
                spec.argv,
                self.log_dir / f"{spec.name}.log",
                env=child_env(spec, self.parent_env),
                cwd=self.cwd,
            )
            self.services.append(Supervised(spec, proc))

    @property
    def all_ready(self) -> bool:
        return all(s.phase is Phase.READY for s in self.services)

    def tick(self) -> str | None:
        """One round over every service; a message when the stack must stop, else None."""
        for index, service in enumerate(self.services):
            now = self.clock()
            if service.phase is Phase.WAITING:
                if all(s.ever_ready for s in self.services[:index]):
                    self._start(service)
            elif service.phase is Phase.BACKOFF:
                if now >= service.restart_at:
                    self._start(service)
            elif not service.proc.running():
                verdict = self._exited(service, now, f"exited with {describe_exit(service.proc.exit_code())}")
                if verdict is not None:
                    return verdict
            elif service.phase is Phase.STARTING:
                if service.spec.ready is None or service.spec.ready():
                    self._ready(service)
                elif now - service.started_at > self.ready_timeout_s:
                    service.proc.stop(grace_s=5)
                    verdict = self._exited(service, now, f"was not ready after {self.ready_timeout_s:g} s")
                    if verdict is not None:
                        return verdict
        if not self.announced and self.all_ready:
            self.announced = True
            self.say("ready — press Ctrl-C to stop")
        return None

    def stop(self) -> None:
        """Stop every service, last started first."""
        for service in reversed(self.services):
            if service.phase is not Phase.WAITING:
                self.say(f"stopping {service.spec.name}")
            service.proc.stop()

    def _start(self, service: Supervised) -> None:
        pid = service.proc.start()
        service.phase = Phase.STARTING
        service.started_at = self.clock()
        service.ready_at = None
        self.say(f"{service.spec.name} started (PID {pid})")

    def _ready(self, service: Supervised) -> None:
        service.phase = Phase.READY
        service.ready_at = self.clock()
        if service.ever_ready:
            self.say(f"{service.spec.name} is back (PID {service.proc.pid})")
            return
        service.ever_ready = True
        for label, url in service.spec.urls.items():
            self.say(f"{label}: {url}")

    def _exited(self, service: Supervised, now: float, what: str) -> str | None:
        name, log = service.spec.name, service.proc.log_path
        decision, service.history = self.policy.after_exit(
            service.history, ready_at=service.ready_at, exited_at=now
        )
        if isinstance(decision, GiveUp):
            return (
                f"{name} {what}; it failed to start {decision.failed_starts} times in a row, "
                f"stopping everything (log: {log})"
            )
        service.phase = Phase.BACKOFF
        service.restart_at = now + decision.delay_s
        self.say(f"{name} {what}; restarting in {decision.delay_s:g} s (log: {log})")
        return None
