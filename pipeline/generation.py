"""Generating one answer: from a prompt (or a partial answer found in the log) to its terminal
event. The events it writes, in order:

1. ``conversation.answers`` <- ``started`` (awaited), for an answer nobody started before;
2. ``ResponseStarted`` (attempt 0), or after a failover ``ResponseResumed`` (attempt + 1,
   CONTINUE after the last stored seq when the provider can continue a prefix, else RESTART);
3. ``TokenDelta`` s, pieces coalesced over ``coalesce_ms``, seq contiguous;
4. exactly one terminal event: ``ResponseCompleted``, ``ResponseFailed`` or ``ResponseCancelled``;
5. every produce acknowledged, then ``conversation.answers`` <- ``done``.

Only then does the worker count the prompt's offset as done (see ``worker.py`` for the commit
order). If the task is cancelled (the partition moved to another worker, or shutdown hands it
over), it stops without a terminal event; the next owner continues the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeline.answer_index import AnswerIndex, IndexEntry
from pipeline.errors import ProviderError
from pipeline.metrics import WorkerMetrics
from pipeline.providers.base import Finish, GenerationRequest, ModelProvider
from pipeline.sink import EventSink
from schemas.answers import AnswerFold
from schemas.chain import GENESIS, seal_encoded
from schemas.records import (
    CancelRequested,
    PromptSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
    now_ms,
)

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ALREADY_DONE = "already_done"
    """The log already held this answer's terminal event (a redelivery or duplicate)."""


@dataclass
class AnswerJob:
    """One prompt to answer, as the worker hands it to ``generate``."""

    prompt: PromptSubmitted
    partition: int
    offset: int
    response_id: str
    resume: AnswerFold | None = None
    """What the log holds of this answer already (after a failover), if anything."""
    started_before: bool = False
    """The index says a worker started it, even if the log shows no event of it."""
    cancel_request: CancelRequested | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_monotonic: float | None = None

    def cancelled(self) -> bool:
        return self.cancel_request is not None

    def cancel(self, request: CancelRequested) -> None:
        """Ask the running (or not yet started) answer to stop; idempotent."""
        if self.cancel_request is None:
            self.cancel_request = request
            self.cancelled_monotonic = time.monotonic()
            self.wake.set()


_END = object()


@dataclass
class Generator:
    """Everything ``generate`` needs besides the job."""

    provider: ModelProvider
    sink: EventSink
    index: AnswerIndex
    metrics: WorkerMetrics
    scan_from: Callable[[int], int]
    """A tokens offset at or before the next event written to a partition."""
    coalesce_ms: float = 15.0

    async def generate(self, job: AnswerJob) -> Outcome:
        prompt, p = job.prompt, job.partition
        pending: list[asyncio.Future[int]] = []
        resume = job.resume
        # The answer's hash chain goes on from the last event the log holds of it (a takeover).
        head = resume.head if resume is not None and resume.started is not None else GENESIS

        async def emit(event: TokenEvent) -> None:
            nonlocal head
            event, value = seal_encoded(event, head)
            head = event.hash
            pending.append(await self.sink.emit(event, p, value))

        if resume is not None and resume.finished:
            await self.index.put(
                p,
                (prompt.conversation_id, prompt.prompt_id),
                IndexEntry(job.response_id, "done", self.scan_from(p)),
            )
            return Outcome.ALREADY_DONE

        model = self.provider.model_for(prompt)
        prefix, seq, attempt = "", 0, 0
        if resume is not None and resume.started is not None:
            attempt = resume.attempt + 1
            mode = ResumeMode.CONTINUE if self.provider.can_continue else ResumeMode.RESTART
            if mode is ResumeMode.CONTINUE:
                prefix, seq = resume.text, resume.last_seq + 1
            model = resume.started.model
            await emit(
                ResponseResumed(
                    prompt.conversation_id,
                    job.response_id,
                    attempt,
                    seq - 1 if mode is ResumeMode.CONTINUE else -1,
                    mode,
                    now_ms(),
                    "worker_lost",
                )
            )
            self.metrics.failovers.labels(mode.value).inc()
            log.info("took over %s at seq %d (attempt %d, %s)", job.response_id, seq, attempt, mode.value)
        else:
            if job.started_before:
                attempt = 1  # someone started it and died before its first event: fence them
            else:
                await self.index.put(
                    p,
                    (prompt.conversation_id, prompt.prompt_id),
                    IndexEntry(job.response_id, "started", self.scan_from(p)),
                )
            await emit(
                ResponseStarted(
                    prompt.conversation_id,
                    job.response_id,
                    prompt.prompt_id,
                    prompt.user_id,
                    prompt.text,
                    model,
                    now_ms(),
                    prompt.device_id,
                    prompt.parameters,
                    attempt,
                )
            )

        outcome, terminal = await self._stream(
            job, GenerationRequest(prompt, model, prefix), seq, attempt, emit
        )
        await emit(terminal)
        await asyncio.gather(*pending)
        if job.cancelled_monotonic is not None and outcome is Outcome.CANCELLED:
            self.metrics.cancel_latency.observe(time.monotonic() - job.cancelled_monotonic)
        await self.index.put(
            p,
            (prompt.conversation_id, prompt.prompt_id),
            IndexEntry(job.response_id, "done", self.scan_from(p)),
        )
        self.metrics.answers.labels(outcome.value).inc()
        return outcome

    async def _stream(
        self,
        job: AnswerJob,
        request: GenerationRequest,
        seq: int,
        attempt: int,
        emit: Callable[[TokenEvent], Awaitable[None]],
    ) -> tuple[Outcome, TokenEvent]:
        prompt, cid, rid = job.prompt, job.prompt.conversation_id, job.response_id
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=256)

        async def pump() -> None:
            try:
                async for item in self.provider.stream(request):
                    await queue.put(item)
            except ProviderError as exc:
                await queue.put(exc)
            except Exception as exc:
                log.exception("provider %s crashed on %s", self.provider.name, rid)
                await queue.put(exc)
            await queue.put(_END)

        buffer: list[str] = []
        deadline: float | None = None
        window = self.coalesce_ms / 1000
        first = seq == 0
        loop = asyncio.get_running_loop()

        async def flush() -> None:
            nonlocal seq, first, deadline
            deadline = None
            if not buffer:
                return
            text = "".join(buffer)
            buffer.clear()
            await emit(TokenDelta(cid, rid, seq, text, now_ms(), attempt))
            self.metrics.deltas.inc()
            if first:
                self.metrics.ttft.observe(max(0.0, time.time() - prompt.submitted_at / 1000))
                first = False
            seq += 1

        def cancelled_event() -> ResponseCancelled:
            req = job.cancel_request
            assert req is not None
            return ResponseCancelled(
                cid, rid, seq - 1, now_ms(), req.request_id, req.user_id, req.device_id, attempt
            )

        if job.cancelled():
            return Outcome.CANCELLED, cancelled_event()
        pump_task = asyncio.create_task(pump(), name=f"provider-{rid}")
        getter: asyncio.Future[object] | None = None
        try:
            while True:
                if getter is None and not queue.empty() and not job.cancelled():
                    # Fast path: the provider is ahead of us, so no futures and no waiting.
                    item = queue.get_nowait()
                    if deadline is not None and loop.time() >= deadline:
                        await flush()
                else:
                    if getter is None:
                        getter = asyncio.ensure_future(queue.get())
                    waker = asyncio.ensure_future(job.wake.wait())
                    timeout = None if deadline is None else max(0.0, deadline - loop.time())
                    waiting: set[asyncio.Future[Any]] = {getter, waker}
                    done, _ = await asyncio.wait(
                        waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    waker.cancel()
                    if job.cancelled():
                        await flush()
                        return Outcome.CANCELLED, cancelled_event()
                    if getter not in done:
                        await flush()  # the coalescing window closed; the get stays pending
                        continue
                    item, getter = getter.result(), None
                if isinstance(item, str):
                    if not item:
                        continue
                    self.metrics.tokens.inc()
                    buffer.append(item)
                    if window <= 0:
                        await flush()
                    elif deadline is None:
                        deadline = loop.time() + window
                elif isinstance(item, Finish):
                    await flush()
                    return Outcome.COMPLETED, ResponseCompleted(
                        cid, rid, seq - 1, now_ms(), item.reason, item.usage, attempt
                    )
                elif isinstance(item, BaseException):
                    await flush()
                    error_class = item.error_class if isinstance(item, ProviderError) else "internal"
                    retriable = item.retriable if isinstance(item, ProviderError) else False
                    return Outcome.FAILED, ResponseFailed(
                        cid, rid, seq - 1, error_class, now_ms(), str(item)[:500], retriable, attempt
                    )
                elif item is _END:
                    await flush()
                    return Outcome.FAILED, ResponseFailed(
                        cid,
                        rid,
                        seq - 1,
                        "provider_protocol",
                        now_ms(),
                        "stream ended without a finish",
                        False,
                        attempt,
                    )
        finally:
            if getter is not None:
                getter.cancel()
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump_task
