"""Resume = merge(catch-up, buffered live): the one pure function every resume goes through.

A resume registers the connection with the hub first, at the hub's position ``splice`` (every
event at or below it has been published, every later one is buffered for the connection). The
catch-up then reads the conversation's events in ``(after, splice]``. The merge:

1. keeps catch-up events in ``(after, splice]`` and buffered events above ``max(after, splice)``;
2. drops duplicates (an offset seen twice) and refuses disorder;
3. checks for gaps: every offset the catch-up was expected to find (``expected``, from the hub's
   offset index, when it has one) is there, the catch-up covered the whole range
   (``complete``), and within one answer attempt no delta's ``seq`` skips one.

A gap raises ``Gap``: the resume is answered with a fresh snapshot (``resync``), never passed
over in silence.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

from gateway.entry import Entry
from schemas.records import ResponseResumed, ResponseStarted, TokenDelta


class Gap(Exception):
    """The merged events would not be every event after the cursor."""


def merge(
    after: int,
    splice: int,
    caught: Iterable[Entry],
    buffered: Iterable[Entry],
    *,
    complete: bool = True,
    expected: Sequence[int] | None = None,
) -> list[Entry]:
    """Every event after offset ``after``, in order, each once."""
    merger = Merger(after, splice, expected)
    out = merger.feed(caught, splice)
    if not complete:
        raise Gap(f"the catch-up read did not reach offset {splice}")
    return out + merger.finish(buffered)


class Merger:
    """``merge`` a stretch at a time, so a long catch-up is passed on as it is read: ``feed``
    each chunk of the catch-up with the offset it covers, then ``finish`` with the buffered live
    events. Whatever a call returns is checked as far as it goes (order, each expected offset up to
    ``through``, seq within an attempt), so nothing is handed out ahead of a hole."""

    def __init__(self, after: int, splice: int, expected: Sequence[int] | None = None) -> None:
        self.after = after
        self.splice = splice
        self.last = after
        self._expected = expected
        self._next_expected = bisect_right(expected, after) if expected is not None else 0
        self._seqs: dict[tuple[str, int], int] = {}

    def feed(self, caught: Iterable[Entry], through: int) -> list[Entry]:
        """The caught-up events, every offset up to ``through`` having been looked at."""
        out: list[Entry] = []
        for entry in caught:
            offset = entry.offset
            if offset <= self.after or offset > self.splice or offset == self.last:
                continue  # seen already, live (the buffer has it), or read twice
            if offset < self.last:
                raise Gap(f"catch-up out of order at offset {offset}")
            out.append(entry)
            self.last = offset
        if self._expected is not None:
            self._check_expected(out, min(through, self.splice))
        self._check_sequence(out)
        return out

    def finish(self, buffered: Iterable[Entry]) -> list[Entry]:
        """The buffered live events that follow the catch-up (which must have reached the splice)."""
        if self._expected is not None:
            self._check_expected([], self.splice)
        out: list[Entry] = []
        last = max(self.last, self.splice)
        for entry in buffered:
            if entry.offset <= last:
                continue  # the client has it (a cursor ahead of this gateway's reader), or a duplicate
            out.append(entry)
            last = entry.offset
        self.last = last
        self._check_sequence(out)
        return out

    def _check_expected(self, found: Sequence[Entry], through: int) -> None:
        assert self._expected is not None
        start = self._next_expected
        stop = bisect_right(self._expected, through, lo=start)
        wanted = self._expected[start:stop]
        offsets = [e.offset for e in found]
        if list(wanted) != offsets:
            missing = sorted(set(wanted) - set(offsets))[:5]
            raise Gap(f"catch-up missed offsets {missing} of {len(self._expected)} expected")
        self._next_expected = stop

    def _check_sequence(self, entries: Sequence[Entry]) -> None:
        check_sequence(entries, self._seqs)


def check_sequence(entries: Sequence[Entry], last_seq: dict[tuple[str, int], int] | None = None) -> None:
    """Within the merged events, deltas of one answer attempt follow each other without a hole
    (``last_seq`` carries what earlier stretches ended with)."""
    last_seq = {} if last_seq is None else last_seq
    for entry in entries:
        event = entry.event
        if isinstance(event, ResponseStarted | ResponseResumed):
            key = (event.response_id, event.attempt)
            last_seq[key] = event.resumed_after_seq if isinstance(event, ResponseResumed) else -1
        elif isinstance(event, TokenDelta):
            key = (event.response_id, event.attempt)
            previous = last_seq.get(key)
            if previous is not None and event.seq > previous + 1:
                raise Gap(f"answer {event.response_id} jumps from seq {previous} to {event.seq}")
            if previous is None or event.seq > previous:
                last_seq[key] = event.seq
