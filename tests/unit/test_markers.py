"""Demo prompt markers: one pure parser with caps, a lazy generator, a loop that stays responsive."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import tracemalloc

import pytest

from gateway.settings import GatewaySettings
from pipeline.errors import MarkerError
from pipeline.providers.base import Finish, GenerationRequest
from pipeline.providers.demo import DemoProvider
from pipeline.providers.markers import Markers, parse_markers
from pipeline.settings import DemoSettings, MarkerCaps, WorkerSettings
from schemas.records import GenerationParameters, PromptSubmitted, now_ms

CAPS = MarkerCaps()


def _prompt(text: str, max_tokens: int | None = None) -> PromptSubmitted:
    return PromptSubmitted("c-1", "p-1", "u-1", text, now_ms(), parameters=GenerationParameters(max_tokens))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", Markers()),
        ("x [[tokens=20000]] [[rate=0]]", Markers(tokens=20000, rate=0.0)),
        ("[[rate=1]] [[rate=1000]]", Markers(rate=1000.0)),  # the last one counts
        ("[[tokens=40]] [[fail_after=12]] [[rate=200]]", Markers(tokens=40, rate=200.0, fail_after=12)),
        ("[[tokens=abc]] is plain text", Markers()),
    ],
)
def test_markers_within_the_caps_are_parsed(text: str, expected: Markers) -> None:
    assert parse_markers(text, CAPS) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[tokens=100000000]]", "at most 20000"),
        ("[[tokens=999999999999999999999]]", "at most 20000"),
        ("[[tokens=1.5]]", "whole number"),
        ("[[fail_after=20001]]", "at most 20000"),
        ("[[rate=0.001]]", "between 1 and 1000"),
        ("[[rate=1001]]", "between 1 and 1000"),
        ("[[rate=1.2.3]]", "takes a number"),
        ("[[tokens=20000]] [[rate=1]]", "over the 600 s cap"),
        ("[[exit_after=3]]", "test-only"),
    ],
)
def test_markers_over_a_cap_or_malformed_are_refused_with_a_message_naming_it(text: str, says: str) -> None:
    with pytest.raises(MarkerError, match=says) as refused:
        parse_markers(text, CAPS)
    assert refused.value.error_class == "invalid_marker"
    assert refused.value.public_message() == str(refused.value)


def test_exit_after_is_honoured_only_with_test_markers_on() -> None:
    on = MarkerCaps(test_markers=True)
    assert parse_markers("[[exit_after=3]]", on) == Markers(exit_after=3)


def test_the_worker_and_the_gateway_read_the_same_caps_from_the_same_variables() -> None:
    env = {
        "TOKENLOG_DEMO_MARKER_MAX_TOKENS": "500",
        "TOKENLOG_DEMO_MARKER_MIN_RATE": "2",
        "TOKENLOG_DEMO_MARKER_MAX_RATE": "50",
        "TOKENLOG_DEMO_MARKER_MAX_SECONDS": "30",
        "TOKENLOG_DEMO_TEST_MARKERS": "true",
    }
    expected = MarkerCaps(500, 2.0, 50.0, 30.0, True)
    assert WorkerSettings.from_env(env).demo.markers == expected
    assert GatewaySettings.from_env(env).markers == expected
    with pytest.raises(ValueError, match="MIN_RATE"):
        WorkerSettings.from_env({"TOKENLOG_DEMO_MARKER_MIN_RATE": "0"})


async def _first_piece(provider: DemoProvider, prompt: PromptSubmitted) -> tuple[str | Finish, int]:
    """The stream's first piece and the most memory (bytes) Python held on the way to it."""
    tracemalloc.start()
    try:
        stream = provider.stream(GenerationRequest(prompt, provider.model_for(prompt)))
        try:
            first = await anext(stream)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return first, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_huge_answer_at_the_cap_starts_at_once_because_nothing_is_built_up_front() -> None:
    # A cap raised to a billion tokens: a list of them would take minutes and ~100 GB.
    provider = DemoProvider(DemoSettings(tokens_per_s=0, markers=MarkerCaps(max_tokens=10**9)))
    first, peak = await _first_piece(provider, _prompt(f"[[tokens={10**9}]] [[rate=0]]"))
    assert isinstance(first, str)
    assert peak < 1_000_000, f"{peak} bytes held before the first token"  # memory, not speed
    tokens = provider.iter_tokens(_prompt(f"[[tokens={10**9}]]"))
    assert inspect.isgenerator(tokens)
    assert all(isinstance(next(tokens), str) for _ in range(1000))


async def test_max_tokens_bounds_the_answer_before_it_is_generated() -> None:
    provider = DemoProvider(DemoSettings(tokens_per_s=0, markers=MarkerCaps(max_tokens=10**9)))
    prompt = _prompt(f"[[tokens={10**9}]] [[rate=0]]", max_tokens=5)
    tracemalloc.start()
    try:
        items = [x async for x in provider.stream(GenerationRequest(prompt, provider.model_for(prompt)))]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes held for a 5-token answer"  # memory, not speed
    assert len(items) == 6
    finish = items[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == "length"
    assert finish.usage.completion_tokens == 5
    assert "".join(str(x) for x in items[:-1]) == "".join(itertools.islice(provider.iter_tokens(prompt), 5))


async def test_the_event_loop_stays_responsive_while_an_answer_streams_as_fast_as_possible() -> None:
    provider = DemoProvider(DemoSettings(tokens_per_s=0))
    prompt = _prompt("[[tokens=20000]] [[rate=0]]")
    consumed = 0
    seen: list[int] = []  # how many pieces had been consumed at each turn of another task
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            await asyncio.sleep(0)
            seen.append(consumed)

    async def consume() -> None:
        nonlocal consumed
        async for _ in provider.stream(GenerationRequest(prompt, provider.model_for(prompt))):
            consumed += 1
        done.set()

    tick = asyncio.create_task(ticker())
    await consume()
    await tick
    assert consumed == 20001
    # Counted in pieces, not milliseconds: the other task ran at least every 64 tokens.
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(seen) >= 20000 // 64, "the stream never let another task run"
    assert max(steps) <= 64, f"{max(steps)} pieces streamed without letting another task run"


def test_an_over_the_cap_prompt_written_straight_to_kafka_fails_with_invalid_marker() -> None:
    from pipeline.answer_index import MemoryAnswerIndex
    from pipeline.generation import AnswerJob, Generator, Outcome
    from pipeline.metrics import WorkerMetrics
    from pipeline.sink import MemoryEventSink
    from schemas.records import ResponseFailed

    async def run() -> tuple[Outcome, ResponseFailed]:
        sink = MemoryEventSink()
        gen = Generator(
            DemoProvider(DemoSettings()), sink, MemoryAnswerIndex(), WorkerMetrics(), lambda p: 0, 0
        )
        outcome = await gen.generate(AnswerJob(_prompt("[[tokens=100000000]]"), 0, 0, "r-1"))
        last = sink.events()[-1]
        assert isinstance(last, ResponseFailed)
        return outcome, last

    outcome, failed = asyncio.run(run())
    assert outcome is Outcome.FAILED
    assert failed.error_class == "invalid_marker"
    assert "at most 20000" in failed.error_message
