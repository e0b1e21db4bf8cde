"""Verifying one answer from the log: contiguous seq, exactly one terminal event, an intact hash
chain; every violation named with its partition and offset. Pure: feed events in log order.

What each finding means (``Kind``):

- ``altered``: the event's content (or its ``prev_hash``) is not what its ``hash`` covers;
- ``missing``: an event the answer needs is not in the log: a seq skipped, a terminal that counts
  more deltas than there are, or an event whose predecessor in the chain never appears;
- ``reordered``: the event is in the log before the event it follows in the chain;
- ``duplicated``: the same event again, or a second event for a seq already taken;
- ``fenced``: written by an attempt a takeover had already replaced (a zombie worker), including
  writes that landed between the new worker's read and its ``ResponseResumed``;
- ``late``: after the answer's terminal event; ``extra_terminal``: a second terminal event;
- ``broken_link``: the event links to an earlier event that is not the one before it (an event
  inserted or removed in a way the seq does not show);
- ``inconsistent``: a terminal event whose last seq contradicts the deltas accepted.

Records written before schema v2 carry no chain (``unchained``): their seq and terminal are
checked, their chain cannot be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from schemas.chain import GENESIS, chained, intact
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


class Kind(StrEnum):
    ALTERED = "altered"
    MISSING = "missing"
    REORDERED = "reordered"
    DUPLICATED = "duplicated"
    FENCED = "fenced"
    LATE = "late"
    EXTRA_TERMINAL = "extra_terminal"
    BROKEN_LINK = "broken_link"
    INCONSISTENT = "inconsistent"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    response_id: str
    partition: int
    offset: int
    """The offset of the event the finding is about (for ``missing``: the event that shows it)."""
    detail: str

    def __str__(self) -> str:
        where = f"partition {self.partition} offset {self.offset}"
        return f"{self.kind.value:14} {self.response_id} {where}: {self.detail}"


def describe(event: TokenEvent) -> str:
    name = type(event).__name__
    if isinstance(event, TokenDelta):
        return f"{name} seq {event.seq} (attempt {event.attempt})"
    return f"{name} (attempt {event.attempt})"


def _last_seq(event: TokenEvent) -> int | None:
    if isinstance(event, ResponseCompleted):
        return event.final_seq
    if isinstance(event, (ResponseFailed, ResponseCancelled)):
        return event.last_seq
    return None


@dataclass(slots=True)
class _Link:
    hash: bytes
    offset: int
    event: TokenEvent


@dataclass
class AnswerAudit:
    """The audit of one answer (``response_id``) on one partition."""

    response_id: str
    partition: int
    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    unchained: int = 0
    attempt: int = 0
    """The attempt of the accepted events."""
    fence: int = 0
    """The highest attempt a takeover (or restart) in the log so far announced; older is fenced."""
    started: bool = False
    last_seq: int = -1
    terminal_offset: int | None = None
    trail: list[_Link] = field(default_factory=list)
    """The accepted events, in chain order (a takeover keeps only what it links to)."""
    _hashes: dict[bytes, int] = field(default_factory=dict)
    """hash -> offset of every accepted event."""
    _waiting: dict[bytes, list[tuple[int, TokenEvent]]] = field(default_factory=dict)
    """Events whose predecessor has not appeared yet, by the hash they link to."""

    @property
    def head(self) -> bytes:
        return self.trail[-1].hash if self.trail else GENESIS

    @property
    def finished(self) -> bool:
        return self.terminal_offset is not None

    def _find(self, kind: Kind, offset: int, detail: str) -> None:
        self.findings.append(Finding(kind, self.response_id, self.partition, offset, detail))

    # ------------------------------------------------------------------ feeding

    def feed(self, offset: int, event: TokenEvent, value: bytes | None = None) -> None:
        """The next event of this answer in log order (``value``: the record it was decoded from)."""
        self.events += 1
        if not chained(event):
            self.unchained += 1
        elif not intact(event, value):
            self._find(Kind.ALTERED, offset, f"{describe(event)}: its hash does not cover its content")
        if event.attempt < self.fence:
            self._find(Kind.FENCED, offset, f"{describe(event)} after the takeover by attempt {self.fence}")
            return
        if isinstance(event, (ResponseResumed, ResponseStarted)):
            self.fence = max(self.fence, event.attempt)
        if chained(event) and event.hash in self._hashes:
            first = self._hashes[event.hash]
            self._find(Kind.DUPLICATED, offset, f"{describe(event)}, first at offset {first}")
            return
        if not chained(event) or self.finished:
            self._accept(offset, event)
            return
        prev = event.prev_hash
        if prev == self.head:
            self._accept(offset, event)
            self._drain()
        elif isinstance(event, ResponseResumed) and prev in self._hashes:
            self._rewind(prev, event)
            self._accept(offset, event)
            self._drain()
        elif isinstance(event, ResponseStarted) and prev == GENESIS and event.attempt > self.attempt:
            self._accept(offset, event)  # a restart by a worker that found nothing to resume
            self._drain()
        elif prev in self._hashes:
            self._find(
                Kind.BROKEN_LINK,
                offset,
                f"{describe(event)} links to the event at offset {self._hashes[prev]}, "
                f"not to the one before it (offset {self.trail[-1].offset if self.trail else '-'})",
            )
            self._accept(offset, event)
            self._drain()
        else:
            self._waiting.setdefault(prev, []).append((offset, event))

    def _rewind(self, prev: bytes, resumed: ResponseResumed) -> None:
        """A takeover links to the last event its worker read; accepted events after that one are
        a zombie's writes that landed before the takeover record."""
        while self.trail and self.trail[-1].hash != prev:
            dropped = self.trail.pop()
            del self._hashes[dropped.hash]
            self._find(
                Kind.FENCED,
                dropped.offset,
                f"{describe(dropped.event)} landed after attempt {resumed.attempt}'s worker read the "
                "answer; the takeover dropped it",
            )
            if isinstance(dropped.event, TokenDelta):
                self.last_seq = min(self.last_seq, dropped.event.seq - 1)

    def _drain(self) -> None:
        """Accept events that were waiting for the event just accepted."""
        while (waiting := self._waiting.pop(self.head, None)) is not None:
            offset, event = waiting[0]
            predecessor = self.trail[-1].offset
            if offset < predecessor:
                self._find(
                    Kind.REORDERED,
                    offset,
                    f"{describe(event)} is in the log before the event it follows (offset {predecessor})",
                )
            for other_offset, other in waiting[1:]:
                self._find(
                    Kind.BROKEN_LINK,
                    other_offset,
                    f"{describe(other)} links to the same event as offset {offset}",
                )
            self._accept(offset, event)

    def _accept(self, offset: int, event: TokenEvent) -> None:
        if self.finished:
            kind = Kind.EXTRA_TERMINAL if _last_seq(event) is not None else Kind.LATE
            self._find(
                kind, offset, f"{describe(event)} after the terminal event at offset {self.terminal_offset}"
            )
            return
        if isinstance(event, ResponseStarted):
            if self.started and event.attempt == self.attempt:
                self._find(Kind.DUPLICATED, offset, f"a second {describe(event)}")
                return
            if self.started:
                self.last_seq = -1  # a restart from scratch by a newer attempt
            self.started, self.attempt = True, event.attempt
        elif isinstance(event, ResponseResumed):
            if event.attempt == self.attempt:
                self._find(Kind.DUPLICATED, offset, f"a second takeover record for {describe(event)}")
                return
            if event.mode is ResumeMode.RESTART:
                self.last_seq = -1
            else:
                self._seq_gap(offset, event, event.resumed_after_seq)
                self.last_seq = event.resumed_after_seq
            self.attempt = event.attempt
        elif isinstance(event, TokenDelta):
            if event.attempt > self.attempt:
                self._find(
                    Kind.MISSING, offset, f"{describe(event)}: attempt {event.attempt}'s takeover record"
                )
                self.attempt = event.attempt
            if event.seq <= self.last_seq:
                self._find(Kind.DUPLICATED, offset, f"{describe(event)}: seq {event.seq} was already written")
                return
            self._seq_gap(offset, event, event.seq - 1)
            self.last_seq = event.seq
        else:
            last = _last_seq(event)
            assert last is not None
            if last > self.last_seq:
                self._seq_gap(offset, event, last)
            elif last < self.last_seq:
                self._find(
                    Kind.INCONSISTENT,
                    offset,
                    f"{describe(event)} ends at seq {last} but seq {self.last_seq} was written",
                )
            self.terminal_offset = offset
        self.trail.append(_Link(event.hash, offset, event))
        if event.hash:
            self._hashes[event.hash] = offset

    def _seq_gap(self, offset: int, event: TokenEvent, upto: int) -> None:
        if upto > self.last_seq:
            missing = f"seq {self.last_seq + 1}" + (f"..{upto}" if upto > self.last_seq + 1 else "")
            self._find(Kind.MISSING, offset, f"{missing} before {describe(event)}")

    # ------------------------------------------------------------------ the end

    def close(self) -> list[Finding]:
        """No more events: events still waiting for a predecessor name what is missing."""
        while self._waiting:
            pending = sorted((o, prev, e) for prev, items in self._waiting.items() for o, e in items)
            offset, prev, event = pending[0]
            before = len(self.findings)
            self._waiting[prev].pop(0)
            if not self._waiting[prev]:
                del self._waiting[prev]
            self._accept(offset, event)  # re-anchor the chain here and go on
            if not any(f.kind is Kind.MISSING for f in self.findings[before:]):
                self._find(
                    Kind.MISSING,
                    offset,
                    f"{describe(event)} follows an event that is not in the log (hash {prev.hex()[:16]})",
                )
            self._drain()
        self.findings.sort(key=lambda f: f.offset)
        return self.findings
