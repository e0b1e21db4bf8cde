"""The chaos checker finds each kind of violation, and only it, in what a client received."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.wire import control_json, event_json
from schemas.chain import GENESIS, seal
from schemas.cursor import Cursor
from schemas.records import (
    ResponseCompleted,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
)
from tests.chaos.checker import KINDS, LogSide, check

CID = "conv-chaos"


def log_events() -> list[tuple[int, TokenEvent]]:
    """Two answers: r-1 plain; r-2 taken over after seq 1, its first worker writing once more
    (fenced) after the takeover."""
    return [
        (10, ResponseStarted(CID, "r-1", "p-1", "u", "q", "m", 0)),
        (11, TokenDelta(CID, "r-1", 0, "Hel", 0)),
        (12, TokenDelta(CID, "r-1", 1, "lo", 0)),
        (13, ResponseCompleted(CID, "r-1", 1, 0)),
        (20, ResponseStarted(CID, "r-2", "p-2", "u", "q", "m", 0)),
        (21, TokenDelta(CID, "r-2", 0, "a", 0)),
        (22, TokenDelta(CID, "r-2", 1, "b", 0)),
        (23, ResponseResumed(CID, "r-2", 1, 1, ResumeMode.CONTINUE, 0)),
        (24, TokenDelta(CID, "r-2", 2, "zombie", 0, 0)),
        (25, TokenDelta(CID, "r-2", 2, "c", 0, 1)),
        (26, ResponseCompleted(CID, "r-2", 2, 0, attempt=1)),
    ]


def frame(offset: int, event: TokenEvent) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(event_json(event, Cursor("e", 0, offset).format()))
    return data


def frames(log: list[tuple[int, TokenEvent]], order: list[int] | None = None) -> list[dict[str, Any]]:
    by_offset = dict(log)
    return [frame(o, by_offset[o]) for o in (order if order is not None else [o for o, _ in log])]


def counts(tally: Any) -> dict[str, int]:
    return {k: v for k, v in tally.row().items() if k != "events_checked" and v}


def test_everything_received_once_in_order_is_clean_and_the_fenced_write_is_known() -> None:
    log = LogSide.of(log_events())
    assert log.fenced == {24}
    tally = check(log, frames(log_events()), after=-1)
    assert tally.clean, tally.details
    assert tally.events_checked == 11
    assert log.answers["r-2"].text == "abc"


def test_starting_after_an_offset_only_the_rest_is_owed() -> None:
    log = LogSide.of(log_events())
    assert check(log, frames(log_events(), [20, 21, 22, 23, 24, 25, 26]), after=13).clean


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        # the tail of the second answer never arrived
        ([10, 11, 12, 13, 20, 21, 22, 23, 24, 25], {"lost": 1, "terminal_missing": 1, "text_mismatch": 1}),
        # a delta in the middle skipped: lost, a gap, and the text differs
        ([10, 11, 13, 20, 21, 22, 23, 24, 25, 26], {"lost": 1, "gap": 1, "text_mismatch": 1}),
        # a delta received twice
        ([10, 11, 12, 12, 13, 20, 21, 22, 23, 24, 25, 26], {"duplicated": 1}),
        # two deltas swapped
        ([10, 12, 11, 13, 20, 21, 22, 23, 24, 25, 26], {"reordered": 1, "text_mismatch": 1}),
    ],
)
def test_each_violation_is_reported_as_its_own_kind(order: list[int], expected: dict[str, int]) -> None:
    log = LogSide.of(log_events())
    assert counts(check(log, frames(log_events(), order), after=-1)) == expected


def test_a_fenced_write_applied_by_the_client_a_doubled_terminal_an_unknown_event_and_a_resync() -> None:
    events = log_events()
    log = LogSide.of(events)
    # the zombie's delta before the takeover would be applied by the client's fold
    fenced_first = frames(events, [10, 11, 12, 13, 20, 21, 22, 24, 23, 25, 26])
    assert counts(check(log, fenced_first, after=-1))["fenced"] == 1

    doubled = [*frames(events), frame(27, ResponseCompleted(CID, "r-2", 2, 0, attempt=1))]
    doubled_log = LogSide.of([*events, (27, ResponseCompleted(CID, "r-2", 2, 0, attempt=1))])
    assert counts(check(doubled_log, doubled, after=-1)) == {"terminal_doubled": 1}

    foreign = [*frames(events), frame(99, TokenDelta("other", "r-9", 0, "x", 0))]
    assert counts(check(log, foreign, after=-1)) == {"unknown": 1}

    resync = orjson.loads(control_json("resync", reason="gap", cursor=Cursor("e", 0, 13).format()))
    assert counts(check(log, [*frames(events)[:4], resync, *frames(events)[4:]], after=-1)) == {"resync": 1}


def test_a_write_that_landed_between_the_successors_read_and_its_takeover_is_applied_then_cut_back() -> None:
    """The old worker woke after its successor read the answer (seq 0) but before the successor's
    takeover record: nothing fences its seq 1 yet, so a client applies it; the takeover (after
    seq 0) cuts it back. Only the answer's text judges that client."""
    started = seal(ResponseStarted(CID, "r-2", "p-2", "u", "q", "m", 0), GENESIS)
    read = seal(TokenDelta(CID, "r-2", 0, "a", 0), started.hash)  # what the successor read
    stale = seal(TokenDelta(CID, "r-2", 1, "stale", 0), read.hash)
    takeover = seal(ResponseResumed(CID, "r-2", 1, 0, ResumeMode.CONTINUE, 0), read.hash)
    delta = seal(TokenDelta(CID, "r-2", 1, "b", 0, 1), takeover.hash)
    done = seal(ResponseCompleted(CID, "r-2", 1, 0, attempt=1), delta.hash)
    events: list[tuple[int, TokenEvent]] = list(
        zip(range(20, 26), [started, read, stale, takeover, delta, done], strict=True)
    )
    log = LogSide.of(events)
    assert log.dropped == {22}
    assert log.fenced == frozenset()
    assert log.answers["r-2"].text == "ab"
    tally = check(log, frames(events), after=-1)
    assert tally.clean, tally.details
    # A client that missed the takeover keeps the stale text: the text check catches it.
    assert counts(check(log, frames(events, [20, 21, 22, 24, 25]), after=-1)) == {
        "lost": 1,
        "gap": 1,
        "text_mismatch": 1,
    }


def test_every_kind_is_in_the_row() -> None:
    assert set(check(LogSide.of([]), [], after=-1).row()) == {"events_checked", *KINDS}
