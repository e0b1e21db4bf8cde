"""The OpenAI-compatible client over real HTTP against a local fake server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pipeline.errors import (
    ProviderProtocolError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from pipeline.http import bind, serve
from pipeline.providers.base import Finish, GenerationRequest
from pipeline.providers.openai import OpenAIProvider, parse_chunk, parse_sse_data
from pipeline.settings import OpenAISettings, WorkerSettings
from schemas.records import GenerationParameters, PromptSubmitted, Usage
from tests.pipeline.fake_openai import ANSWER, FakeOpenAI


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    server = FakeOpenAI()
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    task = asyncio.create_task(serve(server.app(), sock, stop))
    try:
        yield server, f"http://127.0.0.1:{port}/v1"
    finally:
        stop.set()
        await task


def _provider(base_url: str, max_retries: int = 3) -> OpenAIProvider:
    return OpenAIProvider(
        OpenAISettings(
            base_url=base_url,
            api_key="sk-test",
            model="fast",
            retry_base_s=0.01,
            first_token_timeout_s=2,
            idle_timeout_s=0.5,
            max_retries=max_retries,
        )
    )


def _prompt(model: str = "") -> PromptSubmitted:
    return PromptSubmitted(
        "c",
        "p",
        "u",
        "What is Kafka?",
        1,
        model=model,
        parameters=GenerationParameters(max_tokens=50, temperature=0.2),
    )


async def _collect(provider: OpenAIProvider, model: str, prefix: str = "") -> list[str | Finish]:
    try:
        return [x async for x in provider.stream(GenerationRequest(_prompt(model), model, prefix))]
    finally:
        await provider.aclose()


async def test_streams_deltas_finish_reason_and_usage(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    items = await _collect(_provider(url), "fast")
    assert items[:-1] == ANSWER
    assert items[-1] == Finish("stop", Usage(4, len(ANSWER), 4 + len(ANSWER)))
    sent = server.requests[0]
    assert sent["headers"]["authorization"] == "Bearer sk-test"
    assert sent["body"]["stream"] is True
    assert sent["body"]["max_tokens"] == 50
    assert sent["body"]["temperature"] == 0.2
    assert "seed" not in sent["body"]


async def test_continues_a_stored_prefix_as_an_assistant_message(fake: tuple[FakeOpenAI, str]) -> None:
    server, url = fake
    items = await _collect(_provider(url), "fast", prefix="Kafka keeps")
    assert "".join(x for x in items if isinstance(x, str)) == " every event in order."
    body = server.requests[0]["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "Kafka keeps"}
    assert body["continue_final_message"] is True


@pytest.mark.parametrize(("model", "requests"), [("flaky-503", 3), ("flaky-429", 2)])
async def test_transient_errors_before_the_first_token_are_retried(
    fake: tuple[FakeOpenAI, str], model: str, requests: int
) -> None:
    server, url = fake  # flaky-503 fails twice, flaky-429 once (FakeOpenAI.failures_left)
    items = await _collect(_provider(url), model)
    assert items[:-1] == ANSWER
    assert len(server.requests) == requests


async def test_a_rejected_request_is_a_terminal_error(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    with pytest.raises(ProviderRejectedError, match="HTTP 400") as failure:
        await _collect(_provider(url), "reject")
    assert not failure.value.retriable


async def test_a_rejected_answer_tells_the_user_a_code_and_a_safe_message_not_the_body(
    fake: tuple[FakeOpenAI, str],
) -> None:
    from pipeline.answer_index import MemoryAnswerIndex
    from pipeline.generation import AnswerJob, Generator, Outcome
    from pipeline.metrics import WorkerMetrics
    from pipeline.sink import MemoryEventSink
    from schemas.records import ResponseFailed

    _, url = fake
    provider, sink = _provider(url), MemoryEventSink()
    gen = Generator(provider, sink, MemoryAnswerIndex(), WorkerMetrics(), lambda p: 0, 0)
    try:
        assert await gen.generate(AnswerJob(_prompt("reject"), 0, 0, "r-1")) is Outcome.FAILED
    finally:
        await provider.aclose()
    failed = sink.events()[-1]
    assert isinstance(failed, ResponseFailed)
    assert failed.error_class == "provider_rejected"
    assert failed.error_message == "the model provider refused the request"
    assert "unknown model" not in failed.error_message
    assert "400" not in failed.error_message


async def test_an_unreachable_server_tells_the_user_no_host_or_exception_text() -> None:
    from infra.process import free_port
    from pipeline.answer_index import MemoryAnswerIndex
    from pipeline.generation import AnswerJob, Generator
    from pipeline.metrics import WorkerMetrics
    from pipeline.sink import MemoryEventSink
    from schemas.records import ResponseFailed

    provider, sink = _provider(f"http://127.0.0.1:{free_port()}/v1", max_retries=0), MemoryEventSink()
    gen = Generator(provider, sink, MemoryAnswerIndex(), WorkerMetrics(), lambda p: 0, 0)
    try:
        await gen.generate(AnswerJob(_prompt("fast"), 0, 0, "r-1"))
    finally:
        await provider.aclose()
    failed = sink.events()[-1]
    assert isinstance(failed, ResponseFailed)
    assert failed.error_class == "provider_unavailable"
    assert "127.0.0.1" not in failed.error_message
    assert "Error" not in failed.error_message


@pytest.mark.parametrize(
    "url",
    ["", "http://api.example.com/v1", "http://10.0.0.5:8000/v1", "ftp://127.0.0.1/v1", "https:///v1"],
)
def test_the_openai_provider_refuses_a_missing_or_clear_text_remote_base_url(url: str) -> None:
    env = {"TOKENLOG_WORKER_PROVIDER": "openai", "TOKENLOG_OPENAI_BASE_URL": url}
    with pytest.raises(ValueError, match="TOKENLOG_OPENAI_BASE_URL"):
        WorkerSettings.from_env(env)
    with pytest.raises(ValueError, match="TOKENLOG_OPENAI_BASE_URL"):
        OpenAIProvider(OpenAISettings(base_url=url))


@pytest.mark.parametrize(
    "url", ["https://api.openai.com/v1", "http://127.0.0.1:9000/v1", "http://localhost:11434/v1"]
)
def test_https_or_a_loopback_http_base_url_is_accepted(url: str) -> None:
    env = {"TOKENLOG_WORKER_PROVIDER": "openai", "TOKENLOG_OPENAI_BASE_URL": url}
    assert WorkerSettings.from_env(env).openai.base_url == url


def test_the_demo_provider_needs_no_openai_base_url() -> None:
    assert WorkerSettings.from_env({}).openai.base_url == ""


async def test_a_stalled_stream_times_out(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    with pytest.raises(ProviderTimeoutError, match="no data"):
        await _collect(_provider(url), "stall")


async def test_a_stream_cut_before_finish_is_a_protocol_error(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    with pytest.raises(ProviderProtocolError, match="without a finish_reason"):
        await _collect(_provider(url), "cut")


async def test_garbage_in_the_stream_is_a_protocol_error(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    with pytest.raises(ProviderProtocolError, match="unreadable"):
        await _collect(_provider(url), "garbage")


async def test_an_unreachable_server_is_unavailable_after_retries() -> None:
    from infra.process import free_port

    provider = _provider(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    with pytest.raises(ProviderUnavailableError):
        await _collect(provider, "fast")


def test_sse_lines_and_chunks_parse_without_io() -> None:
    assert parse_sse_data("data: [DONE]") == "[DONE]"
    assert parse_sse_data(": comment") is None
    assert parse_sse_data("event: x") is None
    assert parse_chunk('{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}') == ("hi", None, None)
    assert parse_chunk(
        '{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'
    ) == (
        "",
        None,
        Usage(1, 2, 3),
    )
