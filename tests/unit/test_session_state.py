"""The session reducers: each offset once, the reader rule for takeovers, bounded size."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sessions.state import (
    LiveAnswer,
    Session,
    evolve_live,
    evolve_live_deltas,
    evolve_session,
    live_from_dict,
    session_from_dict,
    to_dict,
)
from schemas.records import (
    CancelRequested,
    PromptSubmitted,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
)

C = "c-1"


def run_log(
    events: list[tuple[int, TokenEvent]],
    session: Session | None = None,
    live: LiveAnswer | None = None,
    max_turns: int = 50,
) -> tuple[Session, LiveAnswer]:
    session = session or Session(C)
    live = live or LiveAnswer()
    for offset, event in events:
        session = evolve_session(session, event, offset, live_before=live, max_turns=max_turns)
        live = evolve_live(live, event, offset)
    return session, live


def answer(
    rid: str, prompt_id: str, pieces: list[str], first_offset: int = 0
) -> list[tuple[int, TokenEvent]]:
    events: list[TokenEvent] = [ResponseStarted(C, rid, prompt_id, "u-1", f"q {prompt_id}", "demo", 1)]
    events += [TokenDelta(C, rid, i, text, 2) for i, text in enumerate(pieces)]
    events.append(ResponseCompleted(C, rid, len(pieces) - 1, 3))
    return [(first_offset + i, e) for i, e in enumerate(events)]


def test_a_finished_answer_becomes_a_turn_and_the_live_answer_clears() -> None:
    session, live = run_log(answer("r-1", "p-1", ["Hel", "lo"]))
    assert [(t.prompt_id, t.status, t.answer) for t in session.turns] == [("p-1", "completed", "Hello")]
    assert live.turn is None
    assert max(session.tokens_offset, live.tokens_offset) == 3


def test_the_live_answer_has_the_text_so_far() -> None:
    _, live = run_log(answer("r-1", "p-1", ["a", "b", "c"])[:3])
    assert live.turn is not None
    assert (live.turn.answer, live.turn.last_seq, live.turn.status) == ("ab", 1, "streaming")


def test_redelivered_events_never_double_text() -> None:
    log = answer("r-1", "p-1", ["a", "b", "c"])
    session, live = run_log(log[:3])
    session, live = run_log(log, session, live)  # everything again, from the start
    assert [t.answer for t in session.turns] == ["abc"]


def test_a_lost_session_write_is_repaired_from_the_live_part_on_redelivery() -> None:
    log = answer("r-1", "p-1", ["a", "b"])
    before_end, live_before_end = run_log(log[:-1])
    _, live_after = run_log(log[-1:], before_end, live_before_end)
    # The session's changelog write of the terminal event was lost; the live one was not.
    session, _ = run_log(log[-1:], before_end, live_after)
    assert [(t.answer, t.status) for t in session.turns] == [("ab", "completed")]


def test_a_continue_takeover_cuts_a_stale_writers_extra_text() -> None:
    log = [
        *answer("r-1", "p-1", ["a", "b"])[:-1],
        (3, TokenDelta(C, "r-1", 2, "STALE", 2)),
        (4, ResponseResumed(C, "r-1", 1, 1, ResumeMode.CONTINUE, 3)),
        (5, TokenDelta(C, "r-1", 2, "c", 3, attempt=1)),
        (6, TokenDelta(C, "r-1", 3, "ZOMBIE", 3, attempt=0)),
        (7, ResponseCompleted(C, "r-1", 2, 4, attempt=0)),
        (8, ResponseCompleted(C, "r-1", 2, 4, attempt=1)),
    ]
    session, _ = run_log(log)
    assert [(t.answer, t.attempt) for t in session.turns] == [("abc", 1)]


def test_a_restart_takeover_discards_the_partial_text() -> None:
    log = [
        *answer("r-1", "p-1", ["a", "b"])[:-1],
        (3, ResponseResumed(C, "r-1", 1, -1, ResumeMode.RESTART, 3)),
        (4, TokenDelta(C, "r-1", 0, "x", 3, attempt=1)),
        (5, ResponseFailed(C, "r-1", 0, "provider_timeout", 4, attempt=1)),
    ]
    session, _ = run_log(log)
    assert [(t.answer, t.status, t.error_class) for t in session.turns] == [
        ("x", "failed", "provider_timeout")
    ]


def test_prompts_are_pending_until_their_answer_starts() -> None:
    session = Session(C)
    session = evolve_session(session, PromptSubmitted(C, "p-1", "u-1", "q1", 1, "tab"), 0)
    session = evolve_session(session, PromptSubmitted(C, "p-1", "u-1", "q1", 1, "tab2"), 1)  # duplicate
    session = evolve_session(session, CancelRequested(C, "x", "u-1", 2), 2)
    assert [p.prompt_id for p in session.pending] == ["p-1"]
    assert (session.owner, session.prompts_offset) == ("u-1", 2)
    session, _ = run_log(answer("r-1", "p-1", ["a"]), session)
    assert session.pending == ()


def test_old_turns_beyond_the_limit_are_counted_not_kept() -> None:
    log: list[tuple[int, TokenEvent]] = []
    for i in range(5):
        log += answer(f"r-{i}", f"p-{i}", ["x"], first_offset=len(log))
    session, _ = run_log(log, max_turns=3)
    assert [t.prompt_id for t in session.turns] == ["p-2", "p-3", "p-4"]
    assert session.dropped_turns == 2


def test_state_round_trips_through_its_json_form() -> None:
    session, live = run_log(answer("r-1", "p-1", ["a", "b", "c"])[:3])
    assert session_from_dict(to_dict(session)) == session
    assert live_from_dict(to_dict(live)) == live


def test_the_changelog_codec_writes_the_json_form_with_its_kind_and_reads_it_back() -> None:
    """Values already in a changelog (written as ``{"kind": ..., **to_dict(value)}``) still load."""
    import orjson

    from pipeline.sessions.codec import StateCodec

    codec = StateCodec()
    log = answer("r-1", "p-1", ["a", "b"]) + answer("r-2", "p-2", ["c", "d", "e"], first_offset=4)
    session, live = run_log(log[:-1])
    session = evolve_session(session, PromptSubmitted(C, "p-3", "u-1", "q3", 9), 9)
    assert session.turns
    assert session.pending
    assert live.turn is not None
    assert live.ended is not None
    for kind, value in (("session", session), ("live", live), ("live", LiveAnswer())):
        encoded = codec.dumps(value)
        assert orjson.loads(encoded) == {"kind": kind, **to_dict(value)}
        assert codec.loads(encoded) == value
        assert codec.loads(orjson.dumps({"kind": kind, **to_dict(value)})) == value


def test_a_prompt_applied_after_its_answer_is_not_left_pending() -> None:
    """The prompts and tokens agents run independently: a prompt event may trail its answer."""
    log = answer("r-1", "p-1", ["a"])
    session, live = run_log(log[:2])
    session = evolve_session(session, PromptSubmitted(C, "p-1", "u-1", "q1", 1), 0)
    from pipeline.sessions.snapshot import snapshot

    assert snapshot(session, live, epoch="e", partition=0)["pending"] == []
    session, _ = run_log(log[2:], session, live)
    assert session.pending == ()
    assert [t.prompt_id for t in session.turns] == ["p-1"]


ACTIONS = ("next",) * 12 + ("dup", "gap", "stale", "ahead", "other", "continue", "restart", "start", "end")


def _log_from(actions: list[tuple[str, int]]) -> list[tuple[TokenEvent, int]]:
    """A log a writer (and its successors) could leave: mostly the next delta, with duplicates,
    gaps, fenced writers, deltas of another answer, takeovers of both modes, new answers, ends,
    and re-deliveries (an earlier record at its own offset again)."""
    log: list[tuple[TokenEvent, int]] = [(ResponseStarted(C, "r-0", "p-1", "u-1", "q", "demo", 1), 0)]
    rid, attempt, seq, answers = "r-0", 0, -1, 0
    for action, n in actions:
        text = ("a", "bc", "", "dé")[n % 4]
        event: TokenEvent
        if action == "next":
            seq += 1
            event = TokenDelta(C, rid, seq, text, n + 1, attempt=attempt)
        elif action == "dup":
            event = TokenDelta(C, rid, max(seq, 0), text, 7, attempt=attempt)
        elif action == "gap":
            event = TokenDelta(C, rid, seq + 2, text, 7, attempt=attempt)
        elif action == "stale":
            event = TokenDelta(C, rid, seq + 1, "STALE", 7, attempt=max(0, attempt - 1))
        elif action == "ahead":  # an attempt no takeover announced
            event = TokenDelta(C, rid, seq + 1, "AHEAD", 7, attempt=attempt + 1)
        elif action == "other":
            event = TokenDelta(C, "r-other", seq + 1, "OTHER", 7, attempt=attempt)
        elif action in ("continue", "restart"):
            attempt += 1
            mode = ResumeMode.CONTINUE if action == "continue" else ResumeMode.RESTART
            seq = min(seq, n % 4) if mode is ResumeMode.CONTINUE else -1
            event = ResponseResumed(C, rid, attempt, seq, mode, 3)
        elif action == "start":
            answers += 1
            rid, attempt, seq = f"r-{answers}", 0, -1
            event = ResponseStarted(C, rid, "p-1", "u-1", "q", "demo", 1)
        else:
            event = ResponseCompleted(C, rid, seq, 4, attempt=attempt)
        log.append((event, len(log)))
        if n % 7 == 0 and len(log) > 2:
            log.append(log[n % (len(log) - 1)])  # re-delivered at its own offset
    return log


_LOGS = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 20)), max_size=40).map(_log_from)


@settings(max_examples=400, deadline=None)
@given(_LOGS)
def test_runs_of_deltas_applied_at_once_equal_applying_them_one_by_one(
    log: list[tuple[TokenEvent, int]],
) -> None:
    one_by_one = LiveAnswer()
    for event, offset in log:
        one_by_one = evolve_live(one_by_one, event, offset)
    batched, run = LiveAnswer(), []
    for event, offset in log:
        if isinstance(event, TokenDelta):
            run.append((event, offset))
            continue
        if run:
            batched, run = evolve_live_deltas(batched, run), []
        batched = evolve_live(batched, event, offset)
    if run:
        batched = evolve_live_deltas(batched, run)
    assert batched == one_by_one


def test_a_run_that_is_all_re_delivered_leaves_the_live_answer_as_it_was() -> None:
    _, live = run_log(answer("r-1", "p-1", ["a", "b", "c"])[:4])
    again = [(TokenDelta(C, "r-1", 1, "b", 2), 2), (TokenDelta(C, "r-1", 2, "c", 2), 3)]
    assert evolve_live_deltas(live, again) is live
    assert evolve_live_deltas(live, []) is live


def test_a_run_appends_its_text_and_one_chunk_end_per_delta() -> None:
    _, live = run_log(answer("r-1", "p-1", ["a"])[:2])
    run = [(TokenDelta(C, "r-1", 1, "bc", 5), 2), (TokenDelta(C, "r-1", 3, "GAP", 5), 3)]
    run.append((TokenDelta(C, "r-1", 2, "d", 6), 4))
    after = evolve_live_deltas(live, run)
    assert after.turn is not None
    assert (after.turn.answer, after.turn.last_seq, after.chunk_ends, after.tokens_offset) == (
        "abcd",
        2,
        (1, 3, 4),
        4,
    )
