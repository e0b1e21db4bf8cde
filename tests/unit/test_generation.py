"""Generating one answer with the in-memory twins of the sink and the index (Kafka tests are in
tests/pipeline)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pipeline.answer_index import IndexEntry, MemoryAnswerIndex, decode_entry, encode_entry, lost_attempts
from pipeline.generation import AnswerJob, Generator, Outcome
from pipeline.metrics import WorkerMetrics
from pipeline.providers.base import Finish, GenerationRequest
from pipeline.providers.demo import DemoProvider
from pipeline.settings import DemoSettings
from pipeline.sink import MemoryEventSink
from schemas.answers import AnswerFold, Status, Verdict
from schemas.records import (
    CancelRequested,
    PromptSubmitted,
    ResponseCancelled,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    now_ms,
)
from tests.harness import wait_for

FAST = DemoProvider(DemoSettings(tokens_per_s=0))


def _generator(
    provider: DemoProvider = FAST, coalesce_ms: float = 0
) -> tuple[Generator, MemoryEventSink, MemoryAnswerIndex]:
    sink, index = MemoryEventSink(), MemoryAnswerIndex()
    return Generator(provider, sink, index, WorkerMetrics(), lambda p: 0, coalesce_ms), sink, index


def _job(text: str, pid: str = "p-1", **kw: object) -> AnswerJob:
    return AnswerJob(PromptSubmitted("c-1", pid, "u-1", text, now_ms()), 3, 7, f"r-{pid}", **kw)  # type: ignore[arg-type]


def _fold(sink: MemoryEventSink, into: AnswerFold | None = None) -> AnswerFold:
    answer = into or AnswerFold(sink.log[0][2].response_id)
    for _, _, event in sink.log:
        answer.apply(event)
    return answer


async def test_an_answer_is_started_streamed_and_completed_with_the_index_around_it() -> None:
    gen, sink, index = _generator()
    job = _job("hello [[tokens=25]]")
    assert await gen.generate(job) is Outcome.COMPLETED
    events = sink.events()
    assert isinstance(events[0], ResponseStarted)
    assert {p for p, _, _ in sink.log} == {3}
    answer = _fold(sink)
    assert answer.text == "".join(FAST.answer_tokens(job.prompt))
    assert answer.status is Status.COMPLETED
    assert index.entries[(3, ("c-1", "p-1"))].status == "done"


async def test_coalescing_sends_fewer_deltas_with_the_same_text() -> None:
    paced = DemoProvider(DemoSettings(tokens_per_s=400))
    gen, sink, _ = _generator(paced, coalesce_ms=25)
    job = _job("hello [[tokens=60]]")
    await gen.generate(job)
    deltas = [e for e in sink.events() if isinstance(e, TokenDelta)]
    assert len(deltas) < 30
    assert "".join(d.text for d in deltas) == "".join(paced.answer_tokens(job.prompt))
    assert [d.seq for d in deltas] == list(range(len(deltas)))


async def test_a_cancel_stops_the_stream_and_names_the_last_seq() -> None:
    gen, sink, _ = _generator(DemoProvider(DemoSettings(tokens_per_s=100)))
    job = _job("long [[tokens=500]]")
    task = asyncio.create_task(gen.generate(job))
    await wait_for(lambda: sum(isinstance(e, TokenDelta) for e in sink.events()) >= 3)
    job.cancel(CancelRequested("c-1", "x-1", "u-2", now_ms(), device_id="phone"))
    assert await task is Outcome.CANCELLED
    answer = _fold(sink)
    assert answer.status is Status.CANCELLED
    assert isinstance(answer.terminal, ResponseCancelled)
    assert answer.terminal.last_seq == answer.last_seq


async def test_a_cancel_before_the_start_ends_the_answer_without_text() -> None:
    gen, sink, _ = _generator()
    job = _job("x [[tokens=5]]")
    job.cancel(CancelRequested("c-1", "x-1", "u-1", now_ms()))
    assert await gen.generate(job) is Outcome.CANCELLED
    assert [type(e).__name__ for e in sink.events()] == ["ResponseStarted", "ResponseCancelled"]


async def test_a_provider_failure_is_a_failed_answer_with_its_class() -> None:
    gen, sink, _ = _generator()
    assert await gen.generate(_job("x [[fail_after=4]]")) is Outcome.FAILED
    terminal = sink.events()[-1]
    assert isinstance(terminal, ResponseFailed)
    assert (terminal.error_class, terminal.last_seq) == ("scripted_failure", 3)


@pytest.mark.parametrize("cut", [0, 1, 7, 19])
async def test_a_takeover_continues_exactly_where_the_log_stopped(cut: int) -> None:
    gen, sink, _ = _generator()
    job = _job("resume me [[tokens=20]]")
    await gen.generate(job)
    partial = AnswerFold(job.response_id)
    for event in sink.events()[: cut + 1]:
        partial.apply(event)
    gen2, sink2, _ = _generator()
    assert await gen2.generate(_job("resume me [[tokens=20]]", resume=partial)) is Outcome.COMPLETED
    resumed = sink2.events()[0]
    assert isinstance(resumed, ResponseResumed)
    assert (resumed.mode, resumed.attempt, resumed.resumed_after_seq) == (ResumeMode.CONTINUE, 1, cut - 1)
    assert _fold(sink2, partial).text == "".join(FAST.answer_tokens(job.prompt))


async def test_an_answer_whose_terminal_is_in_the_log_is_not_generated_again() -> None:
    gen, sink, _ = _generator()
    job = _job("done [[tokens=3]]")
    await gen.generate(job)
    finished = _fold(sink)
    gen2, sink2, index2 = _generator()
    assert await gen2.generate(_job("done [[tokens=3]]", resume=finished)) is Outcome.ALREADY_DONE
    assert sink2.log == []
    assert index2.entries[(3, ("c-1", "p-1"))].status == "done"


# ------------------------------------------------------------------ poison prompts and stalls


@pytest.mark.parametrize(
    ("last", "handed_over", "lost"),
    [
        (-1, (), 0),
        (0, (), 1),
        (2, (), 3),
        (2, (1,), 2),
        (2, (0, 1, 2), 0),
        (2, (1, 1, 7), 2),  # duplicates and hand-overs of attempts not started do not count
    ],
)
def test_lost_attempts_are_started_attempts_without_a_hand_over(
    last: int, handed_over: tuple[int, ...], lost: int
) -> None:
    assert lost_attempts(last, handed_over) == lost


def test_an_index_entry_round_trips_with_and_without_the_attempt_fields() -> None:
    entry = IndexEntry("r-1", "started", 12, 3, (0, 2))
    assert decode_entry(encode_entry(entry)) == entry
    assert decode_entry(b'{"response_id":"r-1","status":"started","scan_from":5}') == IndexEntry(
        "r-1", "started", 5
    )


async def _taken_over(attempts: int) -> tuple[AnswerFold, str]:
    """An answer the log shows started and taken over ``attempts - 1`` times, each time lost."""
    gen, sink, _ = _generator()
    job = _job("poison [[tokens=30]]")
    await gen.generate(job)
    partial = AnswerFold(job.response_id)
    for event in sink.events()[:5]:  # started + 4 deltas
        partial.apply(event)
    for attempt in range(1, attempts):
        resumed = ResponseResumed(
            "c-1", job.response_id, attempt, partial.last_seq, ResumeMode.CONTINUE, now_ms()
        )
        partial.apply(resumed)
    return partial, job.response_id


async def test_after_poison_attempts_lost_the_answer_fails_as_poison_without_running_the_provider() -> None:
    partial, rid = await _taken_over(3)  # attempts 0, 1 and 2 all lost
    gen, sink, index = _generator()
    gen.poison_attempts = 3
    entry = IndexEntry(rid, "started", 0, 2)
    outcome = await gen.generate(_job("poison [[tokens=30]]", resume=partial, entry=entry))
    assert outcome is Outcome.POISONED
    resumed, failed = sink.events()
    assert isinstance(resumed, ResponseResumed)
    assert (resumed.attempt, resumed.resumed_after_seq, resumed.reason) == (
        3,
        partial.last_seq,
        "poison_prompt",
    )
    assert isinstance(failed, ResponseFailed)
    assert (failed.error_class, failed.attempt, failed.last_seq) == ("poison_prompt", 3, partial.last_seq)
    assert not failed.retriable
    answer = _fold(sink, partial)
    assert answer.status is Status.FAILED
    assert answer.counts[Verdict.GAP] == 0
    assert index.entries[(3, ("c-1", "p-1"))].status == "done"


async def test_hand_overs_do_not_count_so_the_answer_is_continued() -> None:
    partial, rid = await _taken_over(3)
    gen, sink, _ = _generator()
    gen.poison_attempts = 3
    entry = IndexEntry(rid, "started", 0, 2, (1,))  # attempt 1 ended by a SIGTERM hand-over
    job = _job("poison [[tokens=30]]", resume=partial, entry=entry)
    assert await gen.generate(job) is Outcome.COMPLETED
    assert _fold(sink, partial).text == "".join(FAST.answer_tokens(job.prompt))
    assert job.attempt == 3
    first = sink.events()[0]
    assert isinstance(first, ResponseResumed)
    assert first.attempt == 3


async def test_the_index_names_the_attempt_before_its_first_event_and_the_hand_over_adds_it() -> None:
    partial, rid = await _taken_over(1)
    sink, index = MemoryEventSink(), MemoryAnswerIndex()
    seen: list[tuple[int, int]] = []

    class Watching(MemoryAnswerIndex):
        async def put(self, partition: int, key: tuple[str, str], entry: IndexEntry) -> None:
            seen.append((len(sink.log), entry.attempt))
            await index.put(partition, key, entry)

    gen = Generator(
        DemoProvider(DemoSettings(tokens_per_s=50)), sink, Watching(), WorkerMetrics(), lambda p: 0, 0
    )
    job = _job("poison [[tokens=30]]", resume=partial, entry=IndexEntry(rid, "started", 9, 0))
    task = asyncio.create_task(gen.generate(job))
    await wait_for(lambda: len(sink.log) >= 3)
    assert seen == [(0, 1)], "attempt 1 was not durable in the index before its first event"
    assert index.entries[(3, ("c-1", "p-1"))] == IndexEntry(rid, "started", 9, 1)  # the first scan_from kept
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert job.handover_entry() == IndexEntry(rid, "started", 9, 1, (1,))


async def test_a_provider_that_stops_sending_is_failed_after_the_idle_timeout() -> None:
    class Stuck(DemoProvider):
        async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
            yield "one"
            await asyncio.Event().wait()  # a provider that never sends again
            yield Finish()

    gen, sink, _ = _generator(Stuck(DemoSettings()))
    gen.idle_timeout_s = 0.2
    began = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(gen.generate(_job("stuck")), 5) is Outcome.FAILED
    assert asyncio.get_running_loop().time() - began < 2
    failed = sink.events()[-1]
    assert isinstance(failed, ResponseFailed)
    assert (failed.error_class, failed.last_seq, failed.retriable) == ("provider_stalled", 0, True)
    assert failed.error_message == "the model provider stopped sending the answer"
