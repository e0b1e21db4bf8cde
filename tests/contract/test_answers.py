"""The reader rule: every reader of the log builds the same answer, fencing stale writers."""

from __future__ import annotations

from schemas.answers import AnswerFold, Status, Verdict
from schemas.records import (
    ResponseCompleted,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
)

C, R = "c-1", "r-1"


def started(attempt: int = 0) -> ResponseStarted:
    return ResponseStarted(C, R, "p-1", "u-1", "q", "demo", 1, attempt=attempt)


def delta(seq: int, text: str, attempt: int = 0) -> TokenDelta:
    return TokenDelta(C, R, seq, text, 1, attempt)


def fold(*events: TokenEvent) -> tuple[AnswerFold, list[Verdict]]:
    answer = AnswerFold(R)
    return answer, [answer.apply(e) for e in events]


def test_an_uninterrupted_answer_is_the_concatenation_of_its_deltas() -> None:
    answer, verdicts = fold(started(), delta(0, "a"), delta(1, "b"), ResponseCompleted(C, R, 1, 1))
    assert answer.text == "ab"
    assert answer.status is Status.COMPLETED
    assert set(verdicts) == {Verdict.ACCEPTED}


def test_a_continue_takeover_drops_stale_writes_that_landed_before_it() -> None:
    answer, verdicts = fold(
        started(),
        delta(0, "a"),
        delta(1, "b"),
        delta(2, "c"),  # the old worker, after the new one read the log up to seq 1
        ResponseResumed(C, R, 1, 1, ResumeMode.CONTINUE, 1),
        delta(2, "C", attempt=1),
        delta(3, "z"),  # the old worker again: fenced
        ResponseCompleted(C, R, 2, 1, attempt=0),  # fenced too
        ResponseCompleted(C, R, 2, 1, attempt=1),
    )
    assert answer.text == "abC"
    assert answer.status is Status.COMPLETED
    assert verdicts.count(Verdict.FENCED) == 2


def test_a_restart_takeover_discards_the_partial_text() -> None:
    answer, _ = fold(
        started(), delta(0, "a"), ResponseResumed(C, R, 1, -1, ResumeMode.RESTART, 1), delta(0, "x", 1)
    )
    assert answer.text == "x"


def test_duplicates_gaps_and_late_events_are_named() -> None:
    _, verdicts = fold(
        started(), delta(0, "a"), delta(0, "a"), delta(2, "c"), ResponseCompleted(C, R, 0, 1), delta(1, "b")
    )
    assert verdicts == [
        Verdict.ACCEPTED,
        Verdict.ACCEPTED,
        Verdict.DUPLICATE,
        Verdict.GAP,
        Verdict.ACCEPTED,
        Verdict.LATE,
    ]


def test_a_takeover_claiming_more_than_was_read_is_a_gap() -> None:
    _, verdicts = fold(started(), delta(0, "a"), ResponseResumed(C, R, 1, 5, ResumeMode.CONTINUE, 1))
    assert verdicts[-1] is Verdict.GAP


def test_a_later_start_with_a_higher_attempt_restarts_and_fences_the_first() -> None:
    answer, verdicts = fold(started(0), delta(0, "a"), started(1), delta(0, "b", 1), delta(1, "z", 0))
    assert answer.text == "b"
    assert verdicts[-1] is Verdict.FENCED
