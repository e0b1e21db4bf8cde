"""Generating one answer with the in-memory twins of the sink and the index (Kafka tests are in
tests/pipeline)."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.answer_index import MemoryAnswerIndex
from pipeline.generation import AnswerJob, Generator, Outcome
from pipeline.metrics import WorkerMetrics
from pipeline.providers.demo import DemoProvider
from pipeline.settings import DemoSettings
from pipeline.sink import MemoryEventSink
from schemas.answers import AnswerFold, Status
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
