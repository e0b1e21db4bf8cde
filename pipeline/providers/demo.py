"""A deterministic demo model: realistic-looking text at a set token rate, no network.

The answer is a pure function of the prompt (text, model, seed), so tests compute the expected
answer with ``DemoProvider.answer_tokens`` and a worker that takes over mid-answer continues it
exactly. Markers in the prompt script its behaviour for tests and demos (``[[tokens=N]]``,
``[[rate=R]]``, ``[[fail_after=N]]``, the test-only ``[[exit_after=N]]``), parsed and capped by
``markers.parse_markers``; a prompt over the caps fails with ``invalid_marker``.

Tokens are generated lazily, one sentence at a time, and ``max_tokens`` bounds the count before
anything is generated, so no answer is ever held as a whole; at rate 0 the stream still yields to
the event loop every ``_YIELD_EVERY`` tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator

from pipeline.errors import ProviderError, ScriptedFailureError
from pipeline.providers.base import Finish, GenerationRequest
from pipeline.providers.markers import parse_markers
from pipeline.settings import DemoSettings
from schemas.records import PromptSubmitted, Usage

log = logging.getLogger(__name__)

_YIELD_EVERY = 64
EXIT_CODE = 70
"""The exit status of a worker ended by ``[[exit_after=N]]``."""

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


class DemoProvider:
    """Deterministic text, honouring prefixes (so failover continues the same answer)."""

    name = "demo"
    can_continue = True

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings

    def model_for(self, prompt: PromptSubmitted) -> str:
        return prompt.model or self.settings.model

    def answer_tokens(self, prompt: PromptSubmitted, model: str | None = None) -> list[str]:
        """The whole answer to ``prompt``, token by token (a pure function of the prompt), as a
        list: for tests; ``stream`` never builds it."""
        return list(self.iter_tokens(prompt, model))

    def _length(self, prompt: PromptSubmitted, rng: random.Random) -> int:
        tokens = parse_markers(prompt.text, self.settings.markers).tokens
        if tokens is not None:
            return tokens
        return rng.randint(self.settings.min_tokens, max(self.settings.min_tokens, self.settings.max_tokens))

    def iter_tokens(self, prompt: PromptSubmitted, model: str | None = None) -> Iterator[str]:
        """The answer to ``prompt``, token by token, generated as it is consumed."""
        model = model or self.model_for(prompt)
        seed_material = f"{model}\x00{prompt.parameters.seed}\x00{prompt.text}".encode()
        rng = random.Random(hashlib.sha256(seed_material).digest())
        length = self._length(prompt, rng)
        index, newline_before = 0, False
        while index < length:
            words = rng.choice(_SENTENCES).split()
            if rng.random() < 0.15:
                words[-1] += "\n\n"
            for word in words:
                if index == length:
                    return
                token = word if index == 0 or newline_before else " " + word
                newline_before = word.endswith("\n")
                index += 1
                yield token.rstrip("\n") if index == length else token

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        prompt = request.prompt
        markers = parse_markers(prompt.text, self.settings.markers)
        tokens = self.iter_tokens(prompt, request.model)
        max_tokens = prompt.parameters.max_tokens
        limit, finish = (None if max_tokens is None else max(0, max_tokens)), "stop"
        rate = self.settings.tokens_per_s if markers.rate is None else markers.rate
        exit_after = markers.exit_after if self.settings.markers.test_markers else None

        prefix, matched = request.prefix, 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        emitted = count = 0
        for index, whole in enumerate(tokens):
            if limit is not None and index >= limit:
                finish = "length"
                break
            if markers.fail_after is not None and index >= markers.fail_after:
                raise ScriptedFailureError(f"scripted failure after {markers.fail_after} tokens")
            if exit_after is not None and index >= exit_after:
                log.warning("[[exit_after=%d]]: exiting the worker process (a test-only marker)", exit_after)
                os._exit(EXIT_CODE)
            count += 1
            piece = whole
            if matched < len(prefix):
                # Skip what the log holds already, checking it is this answer's beginning.
                part = prefix[matched : matched + len(whole)]
                if not whole.startswith(part):
                    raise ProviderError("the stored prefix is not a prefix of this answer", retriable=False)
                matched += len(part)
                if len(part) == len(whole):
                    continue
                piece = whole[len(part) :]
            if rate > 0:
                delay = began + (emitted + 1) / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif emitted % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
            emitted += 1
            yield piece
        if matched < len(prefix):
            raise ProviderError("the stored prefix is not a prefix of this answer", retriable=False)
        prompt_tokens = len(prompt.text.split())
        yield Finish(finish, Usage(prompt_tokens, count, prompt_tokens + count))

    async def aclose(self) -> None:
        return None
