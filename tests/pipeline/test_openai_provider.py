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
from pipeline.settings import OpenAISettings
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


@pytest.mark.parametrize("model", ["flaky-503", "flaky-429"])
async def test_transient_errors_before_the_first_token_are_retried(
    fake: tuple[FakeOpenAI, str], model: str
) -> None:
    server, url = fake
    items = await _collect(_provider(url), model)
    assert items[:-1] == ANSWER
    assert len(server.requests) in (2, 3)


async def test_a_rejected_request_is_a_terminal_error(fake: tuple[FakeOpenAI, str]) -> None:
    _, url = fake
    with pytest.raises(ProviderRejectedError, match="HTTP 400") as failure:
        await _collect(_provider(url), "reject")
    assert not failure.value.retriable


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
