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
    if not complete:
        raise Gap(f"the catch-up read did not reach offset {splice}")
    out: list[Entry] = []
    last = after
    for entry in caught:
        offset = entry.offset
        if offset <= after or offset > splice or offset == last:
            continue  # seen already, live (the buffer has it), or read twice
        if offset < last:
            raise Gap(f"catch-up out of order at offset {offset}")
        out.append(entry)
        last = offset
    if expected is not None:
        wanted = [o for o in expected if after < o <= splice]
        found = [e.offset for e in out]
        if found != wanted:
            missing = sorted(set(wanted) - set(found))[:5]
            raise Gap(f"catch-up missed offsets {missing} of {len(wanted)} expected")
    last = max(last, splice)
    for entry in buffered:
        if entry.offset <= last:
            continue  # the client has it (a cursor ahead of this gateway's reader), or a duplicate
        out.append(entry)
        last = entry.offset
    check_sequence(out)
    return out


def check_sequence(entries: Sequence[Entry]) -> None:
    """Within the merged events, deltas of one answer attempt follow each other without a hole."""
    last_seq: dict[tuple[str, int], int] = {}
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
