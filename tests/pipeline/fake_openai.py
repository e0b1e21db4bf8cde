"""A local fake of an OpenAI-compatible server: the real streaming wire format (SSE chunks,
finish_reason, usage, [DONE]), behaviour chosen by the requested model name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ANSWER = ["Kafka", " keeps", " every", " event", " in", " order", "."]


@dataclass
class FakeOpenAI:
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures_left: dict[str, int] = field(default_factory=lambda: {"flaky-503": 2, "flaky-429": 1})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        model = body["model"]
        if model == "reject":
            return JSONResponse({"error": {"message": "unknown model"}}, status_code=400)
        if model in self.failures_left and self.failures_left[model] > 0:
            self.failures_left[model] -= 1
            return JSONResponse({"error": {"message": "busy"}}, status_code=429 if "429" in model else 503)
        tokens = list(ANSWER)
        if body.get("continue_final_message"):
            prefix = body["messages"][-1]["content"]
            full = "".join(tokens)
            assert full.startswith(prefix)
            tokens = [full[len(prefix) :]] if full[len(prefix) :] else []
        return StreamingResponse(self._stream(model, tokens), media_type="text/event-stream")

    async def _stream(self, model: str, tokens: list[str]) -> AsyncIterator[bytes]:
        def event(payload: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(payload)}\n\n".encode()

        yield b": keep-alive comment\n\n"
        for i, token in enumerate(tokens):
            if model == "stall" and i == 2:
                await asyncio.sleep(3600)
            if model == "garbage" and i == 1:
                yield b"data: {not json\n\n"
            yield event(
                {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}],
                }
            )
        if model == "cut":
            return
        yield event({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        yield event(
            {
                "id": "c1",
                "choices": [],
                "usage": {
                    "prompt_tokens": 4,
                    "completion_tokens": len(ANSWER),
                    "total_tokens": 4 + len(ANSWER),
                },
            }
        )
        yield b"data: [DONE]\n\n"
