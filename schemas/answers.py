"""How to read one answer from ``conversation.tokens``: the reader rule every consumer applies.

An answer (one ``response_id``) is written by one worker at a time; after a failover the new
worker writes ``ResponseResumed`` with a higher ``attempt``. A presumed-dead worker that was still
running may append events after that: they carry the older attempt and are **fenced**: every
reader drops them. The rule, applied in log order:

1. An event whose ``attempt`` is lower than the highest attempt seen so far is fenced.
2. ``ResponseResumed(attempt=N, resumed_after_seq=S)``: from now on N is the highest attempt.
   ``CONTINUE`` keeps deltas ``0..S`` and drops any later ones already read (a zombie's writes that
   landed before the takeover record); ``RESTART`` drops all text, ``seq`` starts again at 0.
3. A ``ResponseStarted`` with a higher attempt than seen restarts the answer the same way.
4. ``TokenDelta.seq`` must be ``last_seq + 1``; a lower seq is a duplicate (dropped), a higher one
   a gap (the answer is damaged: report it, never paper over it).
5. After a terminal event (completed, failed, cancelled) of the highest attempt, nothing more of
   the answer is accepted.

Since every reader sees the same log order, every reader ends with the same text. This module
is pure: the worker (resuming answers), the session state, the gateway and replay share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from schemas.records import (
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
)


class Verdict(StrEnum):
    """What the reader rule made of one event."""

    ACCEPTED = "accepted"
    FENCED = "fenced"
    """From an older attempt than the answer's current one."""
    DUPLICATE = "duplicate"
    """Already applied (a seq at or below the last one, a second start)."""
    GAP = "gap"
    """seq skipped ahead: an event is missing."""
    LATE = "late"
    """After the answer's terminal event."""


class Status(StrEnum):
    STREAMING = "streaming"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_TERMINAL_STATUS = {
    ResponseCompleted: Status.COMPLETED,
    ResponseFailed: Status.FAILED,
    ResponseCancelled: Status.CANCELLED,
}


@dataclass
class AnswerFold:
    """One answer as the reader rule builds it, event by event."""

    response_id: str
    started: ResponseStarted | None = None
    attempt: int = 0
    """The highest attempt seen."""
    chunks: list[str] = field(default_factory=list)
    """Accepted delta texts; index = seq."""
    status: Status = Status.STREAMING
    terminal: TokenEvent | None = None
    counts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(Verdict, 0))
    head: bytes = b""
    """The ``hash`` of the last accepted event: what the next event's ``prev_hash`` links to."""

    @property
    def last_seq(self) -> int:
        return len(self.chunks) - 1

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def finished(self) -> bool:
        return self.status is not Status.STREAMING

    def apply(self, event: TokenEvent) -> Verdict:
        verdict = self._decide(event)
        self.counts[verdict] += 1
        if verdict is Verdict.ACCEPTED:
            self.head = event.hash
        return verdict

    def _decide(self, event: TokenEvent) -> Verdict:
        attempt = event.attempt
        if attempt < self.attempt:
            return Verdict.FENCED
        if isinstance(event, ResponseResumed):
            if attempt == self.attempt:
                return Verdict.DUPLICATE
            if self.finished:
                return Verdict.LATE
            if event.mode is ResumeMode.RESTART:
                self.chunks.clear()
            elif event.resumed_after_seq > self.last_seq:
                return Verdict.GAP
            else:
                del self.chunks[event.resumed_after_seq + 1 :]
            self.attempt = attempt
            return Verdict.ACCEPTED
        if self.finished:
            return Verdict.LATE
        if isinstance(event, ResponseStarted):
            if self.started is not None and attempt == self.attempt:
                return Verdict.DUPLICATE
            if self.started is not None:
                self.chunks.clear()
            self.started = event
            self.attempt = attempt
            return Verdict.ACCEPTED
        if attempt > self.attempt:
            # Deltas or an end from an attempt no takeover record announced: not part of the answer.
            return Verdict.GAP
        if isinstance(event, TokenDelta):
            if event.seq <= self.last_seq:
                return Verdict.DUPLICATE
            if event.seq != self.last_seq + 1:
                return Verdict.GAP
            self.chunks.append(event.text)
            return Verdict.ACCEPTED
        self.status = _TERMINAL_STATUS[type(event)]
        self.terminal = event
        return Verdict.ACCEPTED
