"""The snapshot fold: a snapshot at any point of a log, with the rest of the log folded in, is the
snapshot of the whole log (or the fold says it cannot cut back, and nothing else)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fold import CannotFold, fold
from pipeline.sessions.snapshot import snapshot
from pipeline.sessions.state import LiveAnswer, Session, evolve_live, evolve_session
from schemas.records import (
    PromptSubmitted,
    ResponseCompleted,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
)
from tests.unit.test_session_state import _LOGS, ACTIONS, C, _log_from, answer

E, P = "e1", 3


def _state(log: list[tuple[TokenEvent, int]], max_turns: int = 50) -> tuple[Session, LiveAnswer]:
    session, live = Session(C), LiveAnswer()
    for event, offset in log:
        session = evolve_session(session, event, offset, live_before=live, max_turns=max_turns)
        live = evolve_live(live, event, offset)
    return session, live


def _snap(log: list[tuple[TokenEvent, int]], upto: int, max_turns: int = 50) -> dict[str, Any]:
    session, live = _state(log, max_turns)
    return snapshot(session, live, epoch=E, partition=P, applied_upto=upto)


def _pairs(log: list[tuple[int, TokenEvent]]) -> list[tuple[TokenEvent, int]]:
    return [(event, offset) for offset, event in log]


def _check_split(log: list[tuple[TokenEvent, int]], cut: int) -> bool:
    """Fold the log's tail after ``cut`` records into the snapshot of its head: equal to the
    snapshot of the whole log (True), or refused for a CONTINUE cut-back (False)."""
    head = log[: min(cut, len(log))]
    after = max((o for _, o in head), default=-1)
    # The gateway's reader holds each offset once, in order: the tail is what lies above the cut.
    tail = [(e, o) for e, o in log[len(head) :] if o > after]
    upto = max((o for _, o in log), default=-1)
    try:
        folded = fold(_snap(head, after), after=after, events=tail, upto=upto, epoch=E, partition=P)
    except CannotFold:
        assert any(isinstance(e, ResponseResumed) and e.mode is ResumeMode.CONTINUE for e, _ in tail), (
            "only a CONTINUE takeover needs the chunk ends"
        )
        return False
    assert folded.body == _snap(log, upto)
    assert folded.last_offset == upto
    assert folded.events == len(tail)
    return True


@settings(max_examples=400, deadline=None)
@given(_LOGS, st.integers(0, 60))
def test_a_snapshot_with_the_rest_of_the_log_folded_in_is_the_snapshot_of_the_whole_log(
    log: list[tuple[TokenEvent, int]], cut: int
) -> None:
    _check_split(log, cut)


def test_at_every_split_of_random_logs_the_fold_mostly_applies_and_refuses_only_cut_backs() -> None:
    rng = random.Random(21)
    outcomes = {True: 0, False: 0}
    for _ in range(200):
        actions = [(rng.choice(ACTIONS), rng.randint(0, 20)) for _ in range(rng.randint(0, 40))]
        log = _log_from(actions)
        for cut in range(len(log) + 1):
            outcomes[_check_split(log, cut)] += 1
    assert outcomes[True] > 10 * outcomes[False] > 0, outcomes


def test_the_last_tokens_and_the_end_move_the_live_answer_into_the_turns() -> None:
    log = _pairs(answer("r-1", "p-1", ["Hel", "lo", " there"]))  # offsets 0..4
    before = _snap(log[:2], 1)
    assert before["turns"] == []
    folded = fold(before, after=1, events=log[2:], upto=9, epoch=E, partition=P)
    body = folded.body
    assert body["live"] is None
    assert [(t["answer"], t["status"]) for t in body["turns"]] == [("Hello there", "completed")]
    assert body["cursor"] == f"1.{E}.{P}.9"


def test_a_snapshot_of_an_unknown_conversation_gets_its_first_answer_and_owner() -> None:
    empty = snapshot(Session(C), LiveAnswer(), epoch=E, partition=P, applied_upto=40)
    log = _pairs(answer("r-1", "p-1", ["a", "b"], first_offset=41))[:3]
    body = fold(empty, after=40, events=log, upto=43, epoch=E, partition=P).body
    assert body["owner"] == "u-1"
    assert body["live"]["answer"] == "ab"
    assert body["live"]["last_seq"] == 1


def test_no_new_events_move_only_the_cursor() -> None:
    log = _pairs(answer("r-1", "p-1", ["a"]))
    before = _snap(log, 2)
    folded = fold(before, after=2, events=[], upto=7, epoch=E, partition=P)
    assert folded.events == 0
    assert folded.body == {**before, "cursor": f"1.{E}.{P}.7"}


def test_a_continue_takeover_after_the_snapshots_last_seq_folds() -> None:
    log = _pairs(answer("r-1", "p-1", ["a", "b"]))[:3]  # started, a, b
    tail: list[tuple[TokenEvent, int]] = [
        (ResponseResumed(C, "r-1", 1, 1, ResumeMode.CONTINUE, 3), 3),
        (TokenDelta(C, "r-1", 2, "c", 3, attempt=1), 4),
        (ResponseCompleted(C, "r-1", 2, 4, attempt=1), 5),
    ]
    body = fold(_snap(log, 2), after=2, events=tail, upto=5, epoch=E, partition=P).body
    assert [(t["answer"], t["attempt"]) for t in body["turns"]] == [("abc", 1)]


def test_a_continue_takeover_cutting_into_the_snapshots_text_cannot_be_folded() -> None:
    log = _pairs(answer("r-1", "p-1", ["a", "b", "STALE"]))[:4]  # the zombie's seq 2 is in it
    tail = [(ResponseResumed(C, "r-1", 1, 1, ResumeMode.CONTINUE, 3), 4)]
    with pytest.raises(CannotFold):
        fold(_snap(log, 3), after=3, events=tail, upto=4, epoch=E, partition=P)


def test_a_restart_takeover_needs_no_chunk_ends() -> None:
    log = _pairs(answer("r-1", "p-1", ["a", "b"]))[:3]
    tail: list[tuple[TokenEvent, int]] = [
        (ResponseResumed(C, "r-1", 1, -1, ResumeMode.RESTART, 3), 3),
        (TokenDelta(C, "r-1", 0, "x", 3, attempt=1), 4),
    ]
    body = fold(_snap(log, 2), after=2, events=tail, upto=4, epoch=E, partition=P).body
    assert (body["live"]["answer"], body["live"]["attempt"]) == ("x", 1)


def test_turns_and_keys_the_fold_does_not_know_are_passed_on_and_the_turn_limit_holds() -> None:
    log: list[tuple[TokenEvent, int]] = []
    for i in range(4):
        log += _pairs(answer(f"r-{i}", f"p-{i}", ["x"], first_offset=len(log)))
    before = _snap(log[:9], 8, max_turns=2)  # three answers ended; an app keeping two inline
    assert (len(before["turns"]), before["dropped_turns"]) == (2, 1)
    before = {**before, "turns": [{**t, "extra": 1} for t in before["turns"]], "future": "kept"}
    body = fold(before, after=8, events=log[9:], upto=len(log) - 1, epoch=E, partition=P).body
    assert [t["prompt_id"] for t in body["turns"]] == ["p-2", "p-3"]
    assert body["dropped_turns"] == 2
    assert body["turns"][0]["extra"] == 1
    assert body["future"] == "kept"


def test_a_prompt_pending_in_the_snapshot_leaves_pending_when_its_answer_starts() -> None:
    session = evolve_session(Session(C), PromptSubmitted(C, "p-1", "u-1", "q", 1), 0)
    before = snapshot(session, LiveAnswer(), epoch=E, partition=P, applied_upto=5)
    assert [p["prompt_id"] for p in before["pending"]] == ["p-1"]
    started = ResponseStarted(C, "r-1", "p-1", "u-1", "q", "demo", 1)
    body = fold(before, after=5, events=[(started, 6)], upto=6, epoch=E, partition=P).body
    assert body["pending"] == []
    assert body["live"]["prompt_id"] == "p-1"
