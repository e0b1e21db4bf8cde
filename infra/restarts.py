"""When ``make run`` restarts a service that exited, and when it gives up: pure, no I/O.

A service that exits is started again after a pause that doubles with every restart (0.5 s,
1 s, 2 s ... up to 15 s), so a crash loop does not spin the machine. A service that stayed up
for ``stable_s`` after it became ready was healthy: its pause starts again at ``initial_s``.
An exit before the service became ready, or within ``quick_exit_s`` of it, is a *failed start*;
after ``max_failed_starts`` of them in a row the stack is stopped (a service that cannot start
is a configuration problem that restarts will not fix).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the service again after ``delay_s``."""

    delay_s: float
    failed_starts: int
    """Failed starts in a row so far (0 after a run that was not a failed start)."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop everything: the service failed to start ``failed_starts`` times in a row."""

    failed_starts: int


@dataclass(frozen=True, slots=True)
class History:
    """What the policy remembers of one service between its exits."""

    failed_starts: int = 0
    """Consecutive failed starts (exit before ready or soon after it)."""
    restarts: int = 0
    """Restarts since the service last stayed up ``stable_s``: the backoff's exponent."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Capped exponential backoff with a reset after a stable run, and a limit on failed starts."""

    initial_s: float = 0.5
    """The pause before the first restart (and the first after a stable run)."""
    max_s: float = 15.0
    """The longest pause: doubling stops here."""
    stable_s: float = 60.0
    """Up this long after becoming ready, a service is healthy again: its backoff is reset."""
    quick_exit_s: float = 10.0
    """An exit within this long of becoming ready counts as a failed start."""
    max_failed_starts: int = 5
    """This many failed starts in a row stop the stack."""

    def __post_init__(self) -> None:
        if not 0 <= self.initial_s <= self.max_s:
            raise ValueError(f"restart pauses need 0 <= initial ({self.initial_s}) <= max ({self.max_s})")
        if self.quick_exit_s > self.stable_s:
            raise ValueError(
                f"a quick exit ({self.quick_exit_s} s) cannot be longer than a stable run ({self.stable_s} s)"
            )
        if self.max_failed_starts < 1:
            raise ValueError(f"max_failed_starts must be at least 1, got {self.max_failed_starts}")

    def after_exit(
        self, history: History, *, ready_at: float | None, exited_at: float
    ) -> tuple[Restart | GiveUp, History]:
        """What to do about a service that exited at ``exited_at`` (monotonic seconds), having
        become ready at ``ready_at`` (None: it never did), and what to remember for next time."""
        up = None if ready_at is None else exited_at - ready_at
        if up is not None and up >= self.stable_s:
            history = History()
        failed = up is None or up < self.quick_exit_s
        failed_starts = history.failed_starts + 1 if failed else 0
        if failed_starts >= self.max_failed_starts:
            return GiveUp(failed_starts), History(failed_starts, history.restarts)
        delay = min(self.max_s, self.initial_s * 2**history.restarts)
        # The exponent stops growing once the pause is capped (no float overflow in a long loop).
        return Restart(delay, failed_starts), History(failed_starts, min(history.restarts + 1, 64))
