"""The chaos checker finds each kind of violation, and only it: in the log itself (against the
prompts acknowledged and the demo provider's text) and in what a client received."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from gateway.client import ClientError, Connection
from gateway.wire import control_json, event_json
from pipeline.ids import response_id
from schemas.chain import GENESIS, seal
from schemas.cursor import Cursor
from schemas.records import (
    PromptSubmitted,
    ResponseCompleted,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
)
from tests.chaos.checker import DEMO, KINDS, LogSide, check, check_answers
from tests.chaos.world import Scenario, error_labels, exception_label, streaming_at

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


# --------------------------------------------------------------------------- the log itself

PROMPTS = {"p-1": "First [[tokens=6]]", "p-2": "Second [[tokens=5]]"}
"""What the chaos run acknowledged (202), by prompt id."""


def answer(
    prompt_id: str,
    *,
    attempt: int = 0,
    skip: int | None = None,
    tokens: list[str] | None = None,
    at: int = 0,
) -> list[TokenEvent]:
    """A sealed answer to ``PROMPTS[prompt_id]`` as the worker writes it at time ``at``: the
    demo's tokens (or ``tokens``; seq ``skip`` left out), one completion."""
    rid = response_id(CID, prompt_id)
    tokens = expected_text_tokens(prompt_id) if tokens is None else tokens
    events: list[TokenEvent] = [
        ResponseStarted(CID, rid, prompt_id, "u", PROMPTS[prompt_id], "m", at, attempt=attempt)
    ]
    events += [TokenDelta(CID, rid, seq, t, at, attempt) for seq, t in enumerate(tokens) if seq != skip]
    events.append(ResponseCompleted(CID, rid, len(tokens) - 1, at, attempt=attempt))
    return sealed(events)


def expected_text_tokens(prompt_id: str) -> list[str]:
    return DEMO.answer_tokens(PromptSubmitted(CID, prompt_id, "", PROMPTS[prompt_id], 0))


def sealed(events: list[TokenEvent]) -> list[TokenEvent]:
    """Each event linked to the one before it (of its answer)."""
    heads: dict[str, bytes] = {}
    out = []
    for event in events:
        linked = seal(event, heads.get(event.response_id, GENESIS))
        heads[event.response_id] = linked.hash
        out.append(linked)
    return out


def placed(events: list[TokenEvent], first: int = 100) -> list[tuple[int, TokenEvent]]:
    return list(enumerate(events, first))


def judged_log(events: list[TokenEvent], acknowledged: dict[str, str] | None = None) -> dict[str, int]:
    log = LogSide.of(placed(events))
    tally = check_answers(
        log, PROMPTS if acknowledged is None else acknowledged, conversation_id=CID, name=CID
    )
    return counts(tally)


def test_a_log_that_answers_every_acknowledged_prompt_once_with_the_demo_text_is_clean() -> None:
    assert judged_log(answer("p-1") + answer("p-2")) == {}


def test_a_failover_log_with_a_fenced_zombie_write_is_clean() -> None:
    """Worker A wrote seq 0..2 and died; B took over after seq 2 and finished; A, woken, wrote
    seq 3 once more after the takeover (fenced, every reader drops it)."""
    rid = response_id(CID, "p-1")
    tokens = expected_text_tokens("p-1")
    first = answer("p-1")[:4]  # started, seq 0..2
    takeover = seal(ResponseResumed(CID, rid, 1, 2, ResumeMode.CONTINUE, 0), first[-1].hash)
    zombie = seal(TokenDelta(CID, rid, 3, tokens[3], 0, 0), first[-1].hash)
    rest, head = [], takeover.hash
    for seq in range(3, len(tokens)):
        rest.append(seal(TokenDelta(CID, rid, seq, tokens[seq], 0, 1), head))
        head = rest[-1].hash
    done = seal(ResponseCompleted(CID, rid, len(tokens) - 1, 0, attempt=1), head)
    events = [*first, takeover, zombie, *rest, done, *answer("p-2")]
    log = LogSide.of(placed(events))
    assert log.fenced == {105}
    assert judged_log(events) == {}


@pytest.mark.parametrize(
    ("name", "events", "expected"),
    [
        # seq 2 never reached the log: the verifier's missing, the text short by a token
        ("missing seq", lambda: answer("p-1", skip=2) + answer("p-2"), {"log_missing": 1, "wrong_text": 1}),
        # one delta written twice (a retried produce that was not de-duplicated)
        (
            "doubled seq",
            lambda: doubled(answer("p-1"), 2) + answer("p-2"),
            {"log_doubled": 1},
        ),
        # the prompt generated again from scratch, later: a second attempt-0 start and its deltas
        # (the verifier: every one of its events after the first answer's terminal)
        (
            "regenerated",
            lambda: answer("p-1") + answer("p-1", at=5) + answer("p-2"),
            {"regenerated": 1, "log_extra": 8},
        ),
        # an acknowledged prompt with no answer at all
        ("missing answer", lambda: answer("p-1"), {"unanswered": 1}),
        # an answer to a prompt nobody acknowledged
        (
            "extra answer",
            lambda: answer("p-1") + answer("p-2"),
            {"unacknowledged_answer": 1},
        ),
        # the right shape, other text (sealed as the worker would write it)
        (
            "wrong text",
            lambda: answer("p-1", tokens=[*expected_text_tokens("p-1")[:-1], " else"]) + answer("p-2"),
            {"wrong_text": 1},
        ),
        # no terminal event: the answer never completed
        ("unfinished", lambda: answer("p-1")[:-1] + answer("p-2"), {"not_completed": 1}),
        # the same event written twice (a retried produce that was not de-duplicated)
        ("doubled terminal", lambda: answer("p-1") + answer("p-2") + [answer("p-2")[-1]], {"log_doubled": 1}),
        # a second terminal event of the answer
        ("second terminal", lambda: answer("p-1") + answer("p-2") + [second_terminal()], {"log_extra": 1}),
    ],
)
def test_each_defect_of_the_log_is_named(name: str, events: Any, expected: dict[str, int]) -> None:
    acknowledged = {"p-1": PROMPTS["p-1"]} if name == "extra answer" else PROMPTS
    assert judged_log(events(), acknowledged) == expected


def doubled(events: list[TokenEvent], index: int) -> list[TokenEvent]:
    """``events`` with the one at ``index`` written twice in a row."""
    return [*events[: index + 1], events[index], *events[index + 1 :]]


def second_terminal() -> TokenEvent:
    last = answer("p-2")[-1]
    assert isinstance(last, ResponseCompleted)
    return seal(dataclasses.replace(last, completed_at=1), last.hash)


def test_a_restart_that_throws_accepted_text_away_is_a_regeneration() -> None:
    """A later attempt starting the answer over (RESTART) after text was accepted."""
    rid = response_id(CID, "p-1")
    tokens = expected_text_tokens("p-1")
    first = answer("p-1")[:3]  # started, seq 0..1
    restart = seal(ResponseResumed(CID, rid, 1, -1, ResumeMode.RESTART, 0), first[-1].hash)
    again, head = [], restart.hash
    for seq, token in enumerate(tokens):
        again.append(seal(TokenDelta(CID, rid, seq, token, 0, 1), head))
        head = again[-1].hash
    done = seal(ResponseCompleted(CID, rid, len(tokens) - 1, 0, attempt=1), head)
    assert judged_log([*first, restart, *again, done, *answer("p-2")]) == {"regenerated": 1}


# --------------------------------------------------------------------------- what the run adds


def test_a_fault_is_mid_answer_only_between_an_answers_start_and_its_end_by_the_logs_times() -> None:
    log = LogSide.of(placed([answer("p-1", at=1_000)[0], answer("p-1", at=2_000)[-1]]))
    assert streaming_at([log], 1_500)
    assert not streaming_at([log], 999)
    assert not streaming_at([log], 2_000)
    unfinished = LogSide.of(placed(answer("p-2", at=3_000)[:2]))
    assert streaming_at([log, unfinished], 10_000)


def test_every_error_a_connection_met_is_labelled_and_only_the_expected_ones_pass() -> None:
    conn = Connection(frames=[{"type": "token"}, {"type": "error", "code": "going_away"}], ended="close:1012")
    assert error_labels(conn) == ["error going_away", "close 1012"]
    assert error_labels(Connection(ended="broken", error="ReadError")) == ["broken ReadError"]
    assert error_labels(Connection(ended="limit")) == []
    assert exception_label(ClientError(503, {"error": {"code": "unavailable"}})) == "http 503 unavailable"
    assert exception_label(ValueError("x")) == "raised ValueError"

    async def nothing(_: Any) -> None:
        return None

    scenario = Scenario(nothing, frozenset({"broken *", "error going_away"}))
    assert scenario.expected("broken ReadError")
    assert scenario.expected("error going_away")
    assert not scenario.expected("error internal")
    assert not scenario.expected("close 1011")
    assert scenario.expected("submit http 429 rate_limited")  # the run's own burst of prompts
    assert not scenario.expected("submit http 500 internal")
