"""An OpenAI-compatible streaming chat client (OpenAI, vLLM, Ollama, llama.cpp server).

``POST {base_url}/chat/completions`` with ``stream: true``; the response is server-sent events
whose ``data:`` lines are JSON chunks (``choices[0].delta.content``, ``finish_reason``, and with
``stream_options.include_usage`` a final chunk with ``usage``), ended by ``data: [DONE]``.

- Transient failures before the first token (connect errors, timeouts, 429, 5xx) are retried
  with capped, jittered exponential backoff; after that, or on other 4xx, a typed
  ``ProviderError`` ends the answer.
- Continuation after a failover sends the stored partial answer as a final assistant message
  with ``continue_final_message: true`` and ``add_generation_prompt: false`` (vLLM's and
  llama.cpp's way to continue a prefix); servers that ignore it restart instead, so the worker
  can turn continuation off (``TOKENLOG_OPENAI_CONTINUE_PREFIX=false``) and restart visibly.
- The base URL has no default and must be https, or http to a loopback host
  (``settings.check_base_url``): the API key is never sent in clear text off the machine, nor to
  whatever happens to listen on a default port. Error texts (a response body, a host name) are
  for the worker's log; users see ``ProviderError.public_message()``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx

from pipeline.errors import (
    ProviderError,
    ProviderProtocolError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from pipeline.providers.base import Finish, GenerationRequest
from pipeline.settings import OpenAISettings, check_base_url
from schemas.records import PromptSubmitted, Usage


def parse_sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line, or None for any other line (comments, ids, blanks)."""
    if not line.startswith("data:"):
        return None
    return line[5:].lstrip(" ")


def parse_chunk(data: str) -> tuple[str, str | None, Usage | None]:
    """(text, finish_reason, usage) of one streamed JSON chunk."""
    try:
        chunk: Any = json.loads(data)
        choices = chunk.get("choices") or []
        text, finish = "", None
        if choices:
            delta = choices[0].get("delta") or {}
            text = delta.get("content") or ""
            finish = choices[0].get("finish_reason")
        usage = None
        if chunk.get("usage"):
            u = chunk["usage"]
            usage = Usage(
                int(u.get("prompt_tokens", 0)),
                int(u.get("completion_tokens", 0)),
                int(u.get("total_tokens", 0)),
            )
    except (ValueError, AttributeError, TypeError) as exc:
        raise ProviderProtocolError(f"unreadable stream chunk: {data[:200]!r}") from exc
    return str(text), finish, usage


class OpenAIProvider:
    """Streams answers from an OpenAI-compatible server."""

    name = "openai"

    def __init__(self, settings: OpenAISettings, client: httpx.AsyncClient | None = None) -> None:
        check_base_url(settings.base_url)
        self.settings = settings
        self.can_continue = settings.continue_prefix
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = client or httpx.AsyncClient(
            base_url=settings.base_url,
            headers=headers,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_s,
                read=max(settings.first_token_timeout_s, settings.idle_timeout_s),
                write=settings.connect_timeout_s,
                pool=settings.connect_timeout_s,
            ),
        )

    def model_for(self, prompt: PromptSubmitted) -> str:
        return prompt.model or self.settings.model

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        params = request.prompt.parameters
        messages: list[dict[str, str]] = [{"role": "user", "content": request.prompt.text}]
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        for key in ("max_tokens", "temperature", "top_p", "seed"):
            value = getattr(params, key)
            if value is not None:
                body[key] = value
        return body

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        body = self._body(request)
        attempt = 0
        while True:
            started = False
            try:
                async for item in self._stream_once(body):
                    started = True
                    yield item
                return
            except (ProviderUnavailableError, ProviderTimeoutError):
                if started or attempt >= self.settings.max_retries:
                    raise
                delay = min(10.0, self.settings.retry_base_s * 2**attempt)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                attempt += 1

    async def _stream_once(self, body: dict[str, Any]) -> AsyncIterator[str | Finish]:
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise ProviderUnavailableError(f"provider answered HTTP {response.status_code}")
                if response.status_code >= 400:
                    detail = (await response.aread())[:300].decode(errors="replace")
                    raise ProviderRejectedError(
                        f"provider refused the request: HTTP {response.status_code} {detail}"
                    )
                lines = response.aiter_lines()
                finish: str | None = None
                usage: Usage | None = None
                timeout = self.settings.first_token_timeout_s
                while True:
                    try:
                        line = await asyncio.wait_for(anext(lines), timeout)
                    except StopAsyncIteration:
                        break
                    except TimeoutError as exc:
                        raise ProviderTimeoutError(f"no data from the provider for {timeout:.0f}s") from exc
                    data = parse_sse_data(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        break
                    timeout = self.settings.idle_timeout_s
                    text, reason, chunk_usage = parse_chunk(data)
                    if text:
                        yield text
                    finish = reason or finish
                    usage = chunk_usage or usage
                if finish is None:
                    raise ProviderProtocolError("the stream ended without a finish_reason")
                yield Finish(finish, usage or Usage())
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(f"provider timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(f"cannot reach the provider: {type(exc).__name__}: {exc}") from exc
        except ProviderError:
            raise
        except httpx.HTTPError as exc:
            raise ProviderProtocolError(f"HTTP error from the provider: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
