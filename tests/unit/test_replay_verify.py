"""The hash chain the worker writes and the verifier that checks it, on answers generated with
the in-memory sink (the Kafka tamper test is
tests/gateway/test_replay_audit.py)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.replay.transcript import Replay
from pipeline.replay.verify import AnswerAudit, Finding, Kind
from schemas.answers import AnswerFold
from schemas.chain import GENESIS, intact, link, seal
from schemas.records import ResponseCompleted, ResponseResumed, ResponseStarted, TokenDelta, TokenEvent
from tests.unit.test_generation import _generator, _job

Log = list[tuple[int, TokenEvent]]


async def _answer(text: str = "audit me [[tokens=12]]") -> Log:
    gen, sink, _ = _generator()
    await gen.generate(_job(text))
    return [(100 + i, e) for i, (_, _, e) in enumerate(sink.log)]


async def _failover(cut: int, zombie: int = 0) -> Log:
    """An answer whose worker died after ``cut`` events; ``zombie`` more of its writes land after
    the new worker read the log but before its takeover record."""
    gen, sink, _ = _generator()
    await gen.generate(_job("fail over [[tokens=15]]"))
    first = [e for _, _, e in sink.log]
    partial = AnswerFold(first[0].response_id)
    for event in first[:cut]:
        partial.apply(event)
    gen2, sink2, _ = _generator()
    await gen2.generate(_job("fail over [[tokens=15]]", resume=partial))
    events = first[: cut + zombie] + [e for _, _, e in sink2.log]
    return [(200 + i, e) for i, e in enumerate(events)]


def _verify(log: Log) -> list[Finding]:
    audit = AnswerAudit(log[0][1].response_id, 3)
    for offset, event in log:
        audit.feed(offset, event)
    return audit.close()


def _kinds(findings: list[Finding]) -> list[tuple[Kind, int]]:
    return [(f.kind, f.offset) for f in findings]


async def test_the_worker_writes_a_chain_the_verifier_accepts() -> None:
    log = await _answer()
    assert _verify(log) == []
    events = [e for _, e in log]
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert all(intact(e) for e in events)
    assert len({e.hash for e in events}) == len(events)


@pytest.mark.parametrize("cut", [1, 2, 6])
async def test_the_chain_continues_across_a_takeover(cut: int) -> None:
    log = await _failover(cut)
    assert any(isinstance(e, ResponseResumed) for _, e in log)
    assert _verify(log) == []


async def test_a_zombies_writes_between_the_takeovers_read_and_its_record_are_fenced() -> None:
    log = await _failover(3, zombie=2)
    assert _kinds(_verify(log)) == [(Kind.FENCED, 203), (Kind.FENCED, 204)]


async def test_an_altered_delta_is_named_and_nothing_else() -> None:
    log = await _answer()
    offset, event = log[4]
    assert isinstance(event, TokenDelta)
    log[4] = (offset, dataclasses.replace(event, text=event.text + " (edited)"))
    assert _kinds(_verify(log)) == [(Kind.ALTERED, offset)]


async def test_a_dropped_delta_is_missing_where_the_next_one_shows_it() -> None:
    log = await _answer()
    dropped = log.pop(5)
    findings = _verify(log)
    assert _kinds(findings) == [(Kind.MISSING, log[5][0])]
    assert f"seq {dropped[1].seq}" in findings[0].detail  # type: ignore[union-attr]


async def test_two_swapped_deltas_are_reordered() -> None:
    log = await _answer()
    (o1, e1), (o2, e2) = log[3], log[4]
    log[3], log[4] = (o1, e2), (o2, e1)
    assert _kinds(_verify(log)) == [(Kind.REORDERED, o1)]  # seq k+1, ahead of seq k


async def test_a_copy_of_an_event_is_duplicated() -> None:
    log = await _answer()
    log.insert(6, (150, log[3][1]))
    assert _kinds(_verify(log)) == [(Kind.DUPLICATED, 150)]


async def test_an_event_from_a_stale_attempt_is_fenced() -> None:
    log = await _failover(4)
    stale = next(e for _, e in log if isinstance(e, TokenDelta) and e.attempt == 0)
    log.insert(len(log) - 2, (999, stale))
    assert _kinds(_verify(log)) == [(Kind.FENCED, 999)]


async def test_a_dropped_terminal_leaves_the_answer_unfinished_and_a_second_one_is_flagged() -> None:
    log = await _answer()
    terminal = log[-1][1]
    assert isinstance(terminal, ResponseCompleted)
    assert _verify(log[:-1]) == []  # unfinished is not a violation (still being written)
    forged = seal(dataclasses.replace(terminal, finish_reason="length"), terminal.prev_hash)
    assert _kinds(_verify([*log, (500, forged)])) == [(Kind.EXTRA_TERMINAL, 500)]


async def test_records_without_a_chain_are_checked_for_seq_only() -> None:
    log = [(o, dataclasses.replace(e, prev_hash=b"", hash=b"")) for o, e in await _answer()]
    assert _verify(log) == []
    replay = Replay()
    for offset, event in log:
        replay.token(3, offset, event)
    [turn] = replay.turns()
    assert turn.chain == "unchained"
    assert _kinds(_verify(log[:4] + log[5:])) == [(Kind.MISSING, log[5][0])]


def test_the_hash_covers_every_field_and_the_previous_hash() -> None:
    event = TokenDelta("c", "r", 3, "hi", 1000, 0)
    sealed = seal(event, b"x" * 32)
    assert intact(sealed)
    for change in (
        {"text": "ho"},
        {"seq": 4},
        {"produced_at": 1001},
        {"attempt": 1},
        {"prev_hash": b"y" * 32},
    ):
        assert not intact(dataclasses.replace(sealed, **change))
    assert link(b"", event) != link(b"x" * 32, event)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
async def test_any_single_tampering_is_found_and_an_untouched_answer_never_is(data: st.DataObject) -> None:
    log = await _answer("property [[tokens=10]]")
    ops = ["alter", "drop", "swap", "duplicate"]
    op = data.draw(st.sampled_from(ops))
    i = data.draw(st.integers(1, len(log) - 3))  # a delta (the start and the end stay)
    offset, event = log[i]
    assert isinstance(event, TokenDelta)
    if op == "alter":
        log[i] = (offset, dataclasses.replace(event, text=event.text + "!"))
        expected = Kind.ALTERED
    elif op == "drop":
        del log[i]
        expected = Kind.MISSING
    elif op == "swap":
        log[i], log[i + 1] = (offset, log[i + 1][1]), (log[i + 1][0], event)
        expected = Kind.REORDERED
    else:
        log.insert(data.draw(st.integers(i + 1, len(log))), (999, event))
        expected = Kind.DUPLICATED
    kinds = {f.kind for f in _verify(log)}
    assert kinds == {expected}, (op, i, kinds)


async def test_a_replay_turn_carries_the_answer_and_its_timings() -> None:
    replay = Replay()
    log = await _answer()
    for offset, event in log:
        replay.token(3, offset, event)
    [turn] = replay.turns()
    started, end = log[0][1], log[-1][1]
    assert isinstance(started, ResponseStarted)
    assert isinstance(end, ResponseCompleted)
    assert (turn.status, turn.chain, turn.violations) == ("completed", "intact", [])
    assert turn.prompt == started.prompt_text
    assert turn.text == "".join(e.text for _, e in log if isinstance(e, TokenDelta))
    assert turn.ended_at == end.completed_at
    assert turn.first_offset == 100
    assert turn.last_offset == log[-1][0]


async def test_four_tamperings_in_one_failover_answer_are_each_named_once() -> None:
    log = await _failover(8)
    events = [e for _, e in log]
    r = next(i for i, e in enumerate(events) if isinstance(e, ResponseResumed))
    assert isinstance(events[3], TokenDelta)
    altered = dataclasses.replace(events[3], text="forged")  # attempt 0, seq 2
    tampered = [*events[:3], altered, *events[4:6], *events[7 : r + 3]]  # seq 5 (index 6) dropped
    swapped_at = len(tampered)
    tampered += [events[r + 4], events[r + 3]]  # two attempt-1 deltas swapped
    stale_at = len(tampered)
    tampered += [events[2], *events[r + 5 :]]  # attempt 0's seq 1 again, after the takeover
    findings = _verify([(300 + i, e) for i, e in enumerate(tampered)])
    assert _kinds(findings) == [
        (Kind.ALTERED, 303),
        (Kind.MISSING, 306),  # seq 6 shows that seq 5 is missing
        (Kind.REORDERED, 300 + swapped_at),
        (Kind.FENCED, 300 + stale_at),
    ]
