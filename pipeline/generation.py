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

Poison prompts: step 1 is written before *every* attempt, naming it (``"attempt": N``), and a
graceful hand-over adds the attempt to ``handed_over`` (``worker.py``). Attempts with neither a
terminal event nor a hand-over were lost: their worker died or stalled until the group moved
the partition on (``answer_index.lost_attempts``, over the higher of the index's and the log's
attempt). When ``poison_attempts`` (``TOKENLOG_WORKER_POISON_ATTEMPTS``, 3) were lost, no new
attempt runs: the answer ends with ``ResponseResumed`` (fencing the last attempt, or
``ResponseStarted`` if none reached the log) and ``ResponseFailed(poison_prompt)``, and the
prompt's offset is committed like any other.

Stalls: an answer that receives no piece from its provider for ``idle_timeout_s``
(``TOKENLOG_WORKER_ANSWER_IDLE_TIMEOUT_S``) ends with ``ResponseFailed(provider_stalled)``.

``ResponseFailed.error_message`` is the error's ``public_message()`` (a fixed text per error
class); the exception's own text, which may hold a provider's response body or a host name, is
only logged.
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

from pipeline.answer_index import AnswerIndex, IndexEntry, lost_attempts
from pipeline.errors import ProviderError, ProviderStalledError
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
    POISONED = "poisoned"
    """Too many attempts were lost: ended with ``ResponseFailed(poison_prompt)`` without a new one."""


POISON_CLASS = "poison_prompt"


@dataclass
class AnswerJob:
    """One prompt to answer, as the worker hands it to ``generate``."""

    prompt: PromptSubmitted
    partition: int
    offset: int
    response_id: str
    resume: AnswerFold | None = None
    """What the log holds of this answer already (after a failover), if anything."""
    cancel_request: CancelRequested | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_monotonic: float | None = None
    entry: IndexEntry | None = None
    """The answer index's entry of this prompt: loaded at assignment, then the one last written."""
    attempt: int | None = None
    """The attempt running now (set once its index entry is durable)."""
    ended: bool = False
    """Its terminal event is written: nothing is left to hand over."""

    def handover_entry(self) -> IndexEntry | None:
        """The index entry recording that the running attempt was handed over, or None when no
        attempt is running unfinished."""
        if self.attempt is None or self.ended or self.entry is None:
            return None
        handed = self.entry.handed_over
        return IndexEntry(
            self.response_id,
            "started",
            self.entry.scan_from,
            self.attempt,
            handed if self.attempt in handed else (*handed, self.attempt),
        )

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
    poison_attempts: int = 3
    """Lost attempts after which a prompt is failed as ``poison_prompt`` instead of retried."""
    idle_timeout_s: float | None = None
    """No piece from the provider for this long fails the answer (``provider_stalled``)."""

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

        key = (prompt.conversation_id, prompt.prompt_id)
        model = self.provider.model_for(prompt)
        logged = resume is not None and resume.started is not None
        entry = job.entry
        # The last attempt started: the log's, or the index's when it is ahead (its worker died
        # before the attempt's first event reached the log). -1: none.
        indexed = entry.attempt if entry is not None else -1
        last = max(resume.attempt if resume is not None and logged else -1, indexed)
        handed = entry.handed_over if entry is not None else ()
        lost = lost_attempts(last, handed)
        attempt = last + 1
        if lost >= self.poison_attempts:
            return await self._poisoned(job, attempt, lost, emit, pending)
        # Step 1: the attempt is durable in the index before anything of it is generated.
        scan_from = entry.scan_from if entry is not None else self.scan_from(p)
        job.entry = IndexEntry(job.response_id, "started", scan_from, attempt, handed)
        await self.index.put(p, key, job.entry)
        job.attempt = attempt

        prefix, seq = "", 0
        if resume is not None and logged:
            assert resume.started is not None
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
            log.info(
                "took over %s at seq %d (attempt %d, %s; %d lost so far)",
                job.response_id,
                seq,
                attempt,
                mode.value,
                lost,
            )
        else:
            # attempt > 0: someone started it and died before its first event: fence them.
            await emit(self._started(prompt, job.response_id, model, attempt))

        outcome, terminal = await self._stream(
            job, GenerationRequest(prompt, model, prefix), seq, attempt, emit
        )
        await emit(terminal)
        job.ended = True
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

    @staticmethod
    def _started(prompt: PromptSubmitted, rid: str, model: str, attempt: int) -> ResponseStarted:
        return ResponseStarted(
            prompt.conversation_id,
            rid,
            prompt.prompt_id,
            prompt.user_id,
            prompt.text,
            model,
            now_ms(),
            prompt.device_id,
            prompt.parameters,
            attempt,
        )

    async def _poisoned(
        self,
        job: AnswerJob,
        attempt: int,
        lost: int,
        emit: Callable[[TokenEvent], Awaitable[None]],
        pending: list[asyncio.Future[int]],
    ) -> Outcome:
        """End an answer whose attempts were lost ``lost`` times, without running the provider."""
        prompt, rid, resume = job.prompt, job.response_id, job.resume
        log.warning(
            "prompt %s of %s: %d attempts lost (worker killed or stalled); failing it as %s",
            prompt.prompt_id,
            prompt.conversation_id,
            lost,
            POISON_CLASS,
        )
        last_seq = -1
        if resume is not None and resume.started is not None:
            last_seq = resume.last_seq
            await emit(
                ResponseResumed(
                    prompt.conversation_id,
                    rid,
                    attempt,
                    last_seq,
                    ResumeMode.CONTINUE,
                    now_ms(),
                    POISON_CLASS,
                )
            )
        else:
            model = self.provider.model_for(prompt)
            await emit(self._started(prompt, rid, model, attempt))
        await emit(
            ResponseFailed(
                prompt.conversation_id,
                rid,
                last_seq,
                POISON_CLASS,
                now_ms(),
                f"generating this answer stopped its worker {lost} times; it is not tried again",
                False,
                attempt,
            )
        )
        job.ended = True
        await asyncio.gather(*pending)
        scan_from = job.entry.scan_from if job.entry is not None else self.scan_from(job.partition)
        await self.index.put(
            job.partition,
            (prompt.conversation_id, prompt.prompt_id),
            IndexEntry(rid, "done", scan_from),
        )
        self.metrics.answers.labels(Outcome.POISONED.value).inc()
        return Outcome.POISONED

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

        def failed(error: BaseException) -> tuple[Outcome, TokenEvent]:
            if isinstance(error, ProviderError):
                error_class, message, retriable = error.error_class, error.public_message(), error.retriable
                log.warning("answer %s failed (%s): %s", rid, error_class, error)
            else:  # already logged with its traceback by the pump
                error_class, message, retriable = "internal", "the answer failed on an internal error", False
            return Outcome.FAILED, ResponseFailed(
                cid, rid, seq - 1, error_class, now_ms(), message[:500], retriable, attempt
            )

        idle = self.idle_timeout_s
        idle_at = None if idle is None else loop.time() + idle
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
                    wake_at = deadline if idle_at is None else min(deadline or idle_at, idle_at)
                    timeout = None if wake_at is None else max(0.0, wake_at - loop.time())
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
                        if idle_at is not None and loop.time() >= idle_at:
                            return failed(ProviderStalledError(f"no piece from the provider for {idle:g}s"))
                        continue
                    item, getter = getter.result(), None
                if idle is not None:
                    idle_at = loop.time() + idle
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
                    return failed(item)
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
