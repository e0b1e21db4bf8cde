"""A deterministic demo model: realistic-looking text at a set token rate, no network.

The answer is a pure function of the prompt (text, model, seed), so tests compute the expected
answer with ``DemoProvider.answer_tokens`` and a worker that takes over mid-answer continues it
exactly. Markers in the prompt script its behaviour for tests and demos:

- ``[[tokens=N]]``: exactly N tokens;
- ``[[rate=R]]``: R tokens per second (0: as fast as possible);
- ``[[fail_after=N]]``: fail with ``ScriptedFailureError`` after N tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncIterator

from pipeline.errors import ProviderError, ScriptedFailureError
from pipeline.providers.base import Finish, GenerationRequest
from pipeline.settings import DemoSettings
from schemas.records import PromptSubmitted, Usage

_MARKER = re.compile(r"\[\[(tokens|rate|fail_after)=([0-9.]+)\]\]")

_SENTENCES = (
    "Every prompt and every token is an event in an ordered log.",
    "A conversation lives in one partition, so its events never change order.",
    "When the connection drops, the answer keeps being written on the server.",
    "The client comes back with its cursor and reads exactly what it missed.",
    "Nothing is generated twice, because the prompt id makes the request idempotent.",
    "The gateway reads the log once and fans each event out to every open device.",
    "Small deltas are batched over a few milliseconds to keep the cost per token low.",
    "If a worker dies in the middle of an answer, another one continues from the last stored token.",
    "A worker that was presumed dead cannot interleave its tokens, since readers fence older attempts.",
    "Session state is rebuilt from a changelog after a crash and served as a snapshot with its cursor.",
    "Analytics, audit and billing read the same topics through stable Avro schemas.",
    "Replication protects every acknowledged record, even when a broker fails.",
    "A slow client never holds up the others: its queue is bounded and it resumes from its cursor.",
    "The same log answers the question of what a user was shown, and when.",
    "Good question, and the short answer is that the log is the source of truth.",
    "Let me walk through it step by step.",
    "In practice this means a reload is invisible to the reader.",
    "Think of the cursor as a bookmark that never points at the wrong page.",
)


def _markers(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in _MARKER.findall(text)}


class DemoProvider:
    """Deterministic text, honouring prefixes (so failover continues the same answer)."""

    name = "demo"
    can_continue = True

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings

    def model_for(self, prompt: PromptSubmitted) -> str:
        return prompt.model or self.settings.model

    def answer_tokens(self, prompt: PromptSubmitted, model: str | None = None) -> list[str]:
        """The whole answer to ``prompt``, token by token (a pure function of the prompt)."""
        model = model or self.model_for(prompt)
        seed_material = f"{model}\x00{prompt.parameters.seed}\x00{prompt.text}".encode()
        rng = random.Random(hashlib.sha256(seed_material).digest())
        markers = _markers(prompt.text)
        if "tokens" in markers:
            length = int(markers["tokens"])
        else:
            length = rng.randint(
                self.settings.min_tokens, max(self.settings.min_tokens, self.settings.max_tokens)
            )
        words: list[str] = []
        while len(words) < length:
            words += rng.choice(_SENTENCES).split()
            if rng.random() < 0.15:
                words[-1] += "\n\n"
        words = words[:length]
        tokens = [w if i == 0 or words[i - 1].endswith("\n") else " " + w for i, w in enumerate(words)]
        if tokens:
            tokens[-1] = tokens[-1].rstrip("\n")
        return tokens

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        prompt = request.prompt
        markers = _markers(prompt.text)
        tokens = self.answer_tokens(prompt, request.model)
        finish = "stop"
        if prompt.parameters.max_tokens is not None and prompt.parameters.max_tokens < len(tokens):
            tokens, finish = tokens[: max(0, prompt.parameters.max_tokens)], "length"
        rate = markers.get("rate", self.settings.tokens_per_s)
        fail_after = int(markers["fail_after"]) if "fail_after" in markers else None

        skip_chars = len(request.prefix)
        if skip_chars and not "".join(tokens).startswith(request.prefix):
            raise ProviderError("the stored prefix is not a prefix of this answer", retriable=False)
        loop = asyncio.get_running_loop()
        began = loop.time()
        emitted = 0
        for index, token in enumerate(tokens):
            if fail_after is not None and index >= fail_after:
                raise ScriptedFailureError(f"scripted failure after {fail_after} tokens")
            if skip_chars >= len(token):
                skip_chars -= len(token)
                continue
            piece, skip_chars = token[skip_chars:], 0
            if rate > 0:
                delay = began + (emitted + 1) / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            emitted += 1
            yield piece
        prompt_tokens = len(prompt.text.split())
        yield Finish(finish, Usage(prompt_tokens, len(tokens), prompt_tokens + len(tokens)))

    async def aclose(self) -> None:
        return None
