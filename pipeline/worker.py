"""The generation worker: prompts in (``conversation.prompts``, a consumer group), answers out
(``conversation.tokens``), independent of any client connection.

- Prompts of one conversation are answered strictly in order (one queue and one task per active
  conversation); different conversations run concurrently, up to ``max_in_flight`` answers per
  process, so one long answer never blocks the other conversations of its partition.
- Tokens of a conversation go to the partition with the same number as its prompts
  (co-partitioning), so one worker owns both sides of a partition.

Commit order (per prompt; the consumer's offset of a partition moves only over prompts for which
all of this is done):

0. ``conversation.owners`` <- the owner, for a prompt that claims its conversation (the first
   in the log, ``schemas.ownership``): acknowledged before any prompt of its fetch is handed on.
   Another user's prompt stops here: its offset is done, nothing is written for it;
1. ``conversation.answers`` <- started (acknowledged) — the prompt_id index;
2. ``conversation.tokens`` <- ResponseStarted / ResponseResumed, TokenDeltas, the terminal event;
3. every produce of step 2 acknowledged (acks=all, idempotent producer);
4. ``conversation.answers`` <- done;
5. the prompt's offset is marked done; the commit loop commits, per partition, the lowest offset
   still in progress (``offsets.OffsetTracker``) every ``commit_interval_ms`` and on revocation.

A crash anywhere before 5 leaves the prompt uncommitted: the next owner loads the index and the
tail of the tokens partition and either skips the prompt (answered), or continues its answer
(``ResponseResumed``), or starts it. A duplicate prompt_id is answered once: the index holds it.

Poison prompts (a prompt whose generation kills or stalls its worker): the index counts every
attempt (``generation.py``), and a hand-over is not a loss: when this worker stops an unfinished
answer on SIGTERM or on a rebalance while it is still a member of the group (an offset commit
for the partition succeeds), it adds the attempt to the entry's ``handed_over``. A worker the
group already dropped (a stall past the session timeout) fails that commit and records nothing,
so its attempt counts as lost. After ``poison_attempts`` lost attempts the next owner fails the
answer as ``poison_prompt`` and the offset moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from infra.topics import shared_partition_count
from pipeline.answer_index import IndexEntry, IndexKey, KafkaAnswerIndex, decode_entry, decode_key
from pipeline.generation import AnswerJob, Generator
from pipeline.ids import response_id
from pipeline.metrics import WorkerMetrics
from pipeline.offsets import OffsetTracker
from pipeline.owners import Claimed, KafkaOwnerLog, OwnerEntry, OwnerLog
from pipeline.owners import decode_entry as decode_owner
from pipeline.providers.base import ModelProvider
from pipeline.settings import WorkerSettings
from pipeline.sink import KafkaEventSink
from schemas.answers import AnswerFold
from schemas.codec import PROMPTS, TOKENS, deadletter_headers
from schemas.errors import DecodeError
from schemas.ownership import Claim, decide
from schemas.records import CancelRequested, PromptRecord, PromptSubmitted
from schemas.registry import ANSWERS_TOPIC, DEADLETTER_TOPIC, OWNERS_TOPIC, PROMPTS_TOPIC, TOKENS_TOPIC

log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    """What this worker knows of one assigned partition."""

    tracker: OffsetTracker
    index: dict[IndexKey, IndexEntry]
    resumable: dict[str, AnswerFold]
    """Answers found unfinished in the log at assignment, by response_id."""
    tokens_end: int
    committed: int
    owners: dict[str, str] = field(default_factory=dict)
    """The owner of every conversation of the partition (``conversation.owners``)."""


@dataclass
class Conversation:
    cid: str
    partition: int
    queue: deque[AnswerJob] = field(default_factory=deque)
    current: AnswerJob | None = None
    task: asyncio.Task[None] | None = None


class Worker:
    def __init__(self, settings: WorkerSettings, provider: ModelProvider, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.provider = provider
        self.metrics = metrics
        self.partitions: dict[int, PartitionState] = {}
        self.conversations: dict[str, Conversation] = {}
        self.fatal: BaseException | None = None
        self._stop = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._draining = False
        self._paused = False
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
            request_timeout_ms=30_000,
            **settings.kafka_security.client_kwargs(),
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.group_id,
            client_id=f"tokenlog-worker-{settings.worker_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_records=500,
            fetch_max_wait_ms=100,
            **settings.kafka_security.client_kwargs(),
        )
        self._reader = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **settings.kafka_security.client_kwargs(),
        )
        self.sink = KafkaEventSink(self._producer)
        self.owner_log: OwnerLog = KafkaOwnerLog(self._producer)
        self.generator = Generator(
            provider,
            self.sink,
            KafkaAnswerIndex(self._producer),
            metrics,
            self._scan_from,
            settings.coalesce_ms,
            settings.poison_attempts,
            settings.answer_idle_timeout_s,
        )

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume until ``stop()``; then finish or hand over in-flight answers and leave."""
        # Fail fast, naming what to do, when the topics are missing or not co-partitioned.
        await shared_partition_count(
            self.settings.bootstrap_servers,
            (PROMPTS_TOPIC, TOKENS_TOPIC, ANSWERS_TOPIC, DEADLETTER_TOPIC, OWNERS_TOPIC),
            self.settings.kafka_security,
        )
        await self._producer.start()
        await self._reader.start()
        self._consumer.subscribe([PROMPTS_TOPIC], listener=_Listener(self))
        await self._consumer.start()
        committer = asyncio.create_task(self._commit_loop(), name="commit-loop")
        try:
            while not self._stop.is_set() and self.fatal is None:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
                await self._handle(batch)
                self._apply_backpressure()
        finally:
            await self._shutdown(committer)
        if self.fatal is not None:
            raise self.fatal

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        self._draining = True
        with contextlib.suppress(Exception):
            self._consumer.pause(*self._consumer.assignment())
        running = [c.task for c in self.conversations.values() if c.task is not None]
        if running and self.fatal is None:
            log.info(
                "finishing %d answers (up to %.0fs) before handing over",
                len(running),
                self.settings.shutdown_grace_s,
            )
            await asyncio.wait(running, timeout=self.settings.shutdown_grace_s)
        stopped = await self._abandon(list(self.conversations.values()))
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        if await self._commit(force=True) and self.fatal is None:
            await self._record_handovers(stopped)
        for client in (self._consumer, self._reader, self._producer):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), 10)

    # ------------------------------------------------------------------ prompts in

    async def _handle(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for tp, messages in batch.items():
            state = self.partitions.get(tp.partition)
            if state is None:
                # Fetched before the partition was loaded (or after it was revoked): not ours to
                # handle now; a loaded partition is sought back to its committed offset.
                continue
            ready: list[tuple[PromptRecord, int]] = []
            claims: list[Claimed] = []
            for msg in messages:
                state.tracker.received(msg.offset)
                try:
                    record = PROMPTS.decode(msg.value, partition=msg.partition, offset=msg.offset)
                except DecodeError as exc:
                    await self._dead_letter(msg, exc)
                    state.tracker.done(msg.offset)
                    continue
                cid = record.conversation_id
                claim = decide(state.owners.get(cid), record)
                if claim is Claim.STRANGER:
                    self._refuse(record)
                    state.tracker.done(msg.offset)
                    continue
                if claim is Claim.CLAIMS:
                    state.owners[cid] = record.user_id
                    claims.append((cid, OwnerEntry(record.user_id, msg.offset)))
                ready.append((record, msg.offset))
            if claims:  # step 0: durable before any answer of a new conversation starts
                await self.owner_log.put(tp.partition, claims)
                if self.partitions.get(tp.partition) is not state:
                    continue  # revoked meanwhile: the next owner reads these prompts again
            for record, offset in ready:
                if isinstance(record, PromptSubmitted):
                    self._enqueue(record, state, tp.partition, offset)
                else:
                    self._cancel(record)
                    state.tracker.done(offset)
        self.metrics.buffered.set(sum(len(c.queue) for c in self.conversations.values()))

    def _refuse(self, record: PromptRecord) -> None:
        """A command of a user who does not own its conversation: nothing is written for it."""
        kind = "prompt" if isinstance(record, PromptSubmitted) else "cancel"
        self.metrics.prompts_refused.labels(kind).inc()
        log.warning(
            "a %s of a user who does not own conversation %s was refused", kind, record.conversation_id
        )

    def _enqueue(self, prompt: PromptSubmitted, state: PartitionState, partition: int, offset: int) -> None:
        key = (prompt.conversation_id, prompt.prompt_id)
        rid = response_id(*key)
        entry = state.index.get(key)
        conv = self.conversations.get(prompt.conversation_id)
        queued = conv is not None and any(
            j.prompt.prompt_id == prompt.prompt_id
            for j in (*conv.queue, *([conv.current] if conv.current else []))
        )
        if (entry is not None and entry.status == "done") or queued:
            self.metrics.skipped.labels("duplicate").inc()
            log.info(
                "prompt %s of %s already answered or queued: skipped",
                prompt.prompt_id,
                prompt.conversation_id,
            )
            state.tracker.done(offset)
            return
        resume = state.resumable.get(rid)
        job = AnswerJob(
            prompt,
            partition,
            offset,
            rid,
            resume=resume,
            entry=entry,
        )
        if conv is None:
            conv = self.conversations[prompt.conversation_id] = Conversation(
                prompt.conversation_id, partition
            )
        conv.queue.append(job)
        if conv.task is None:
            conv.task = asyncio.create_task(self._run_conversation(conv), name=f"conv-{conv.cid}")

    def _cancel(self, request: CancelRequested) -> None:
        conv = self.conversations.get(request.conversation_id)
        jobs = [] if conv is None else [*([conv.current] if conv.current else []), *conv.queue]
        if request.response_id is None and request.prompt_id is None:
            targets = jobs[:1] if conv is not None and conv.current is not None else []
        else:
            targets = [
                j
                for j in jobs
                if j.response_id == request.response_id or j.prompt.prompt_id == request.prompt_id
            ]
        if not targets:
            self.metrics.cancel_noops.inc()
            log.info(
                "cancel %s of %s: nothing running to stop (already finished?)",
                request.request_id,
                request.conversation_id,
            )
        for job in targets:
            job.cancel(request)

    async def _run_conversation(self, conv: Conversation) -> None:
        try:
            while conv.queue and not self._draining:
                job = conv.queue.popleft()
                conv.current = job
                async with self._slots:
                    self.metrics.in_flight.inc()
                    try:
                        await self.generator.generate(job)
                    finally:
                        self.metrics.in_flight.dec()
                state = self.partitions.get(job.partition)
                if state is not None:
                    key = (job.prompt.conversation_id, job.prompt.prompt_id)
                    state.index[key] = IndexEntry(job.response_id, "done", self._scan_from(job.partition))
                    state.resumable.pop(job.response_id, None)
                    state.tracker.done(job.offset)
                conv.current = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Kafka unreachable beyond the producer's retries, or a bug: stop this process, so
            # another worker takes the partition over and continues the answer from the log.
            log.exception("answer task of %s failed; stopping the worker", conv.cid)
            self.fatal = exc
            self._stop.set()
        finally:
            conv.task = None
            if not conv.queue and self.conversations.get(conv.cid) is conv:
                del self.conversations[conv.cid]

    def _apply_backpressure(self) -> None:
        buffered = sum(len(c.queue) for c in self.conversations.values())
        limit = self.settings.max_buffered_prompts
        if not self._paused and buffered > limit:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
        elif self._paused and buffered < limit // 2:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    async def _dead_letter(self, msg: Any, error: DecodeError) -> None:
        self.metrics.decode_errors.inc()
        log.warning("dead-lettering an undecodable prompt record: %s", error)
        await self._producer.send_and_wait(
            DEADLETTER_TOPIC,
            msg.value,
            key=msg.key,
            partition=msg.partition,
            headers=deadletter_headers(error),
        )

    # ------------------------------------------------------------------ offsets

    def _scan_from(self, partition: int) -> int:
        state = self.partitions.get(partition)
        end = state.tokens_end if state is not None else 0
        return max(end, self.sink.last_offsets.get(partition, -1) + 1)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_ms / 1000)
            await self._commit()

    async def _commit(self, partitions: set[int] | None = None, *, force: bool = False) -> bool:
        """Commit the done prefix of each partition (with ``force``, also positions that did not
        move: a proof that this worker is still the group's member for them). True on success
        or when there was nothing to commit."""
        offsets = {}
        for p, state in self.partitions.items():
            if partitions is not None and p not in partitions:
                continue
            position = state.tracker.committable()
            if position > state.committed or force:
                offsets[TopicPartition(PROMPTS_TOPIC, p)] = position
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, AssertionError) as exc:
            log.warning("offset commit failed (will retry): %r", exc)
            return False
        for tp, position in offsets.items():
            if tp.partition in self.partitions:
                self.partitions[tp.partition].committed = position
        return True

    # ------------------------------------------------------------------ rebalance

    async def _abandon(self, conversations: list[Conversation]) -> list[AnswerJob]:
        """Stop answers without a terminal event: their next owner continues them. Returns the
        answers that were running."""
        tasks, running = [], []
        for conv in conversations:
            if conv.task is not None:
                conv.task.cancel()
                tasks.append(conv.task)
                if conv.current is not None:
                    running.append(conv.current)
            self.conversations.pop(conv.cid, None)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return running

    async def _record_handovers(self, jobs: list[AnswerJob]) -> None:
        """Mark the running attempt of each stopped answer as handed over (not lost), so a
        graceful stop never counts toward ``poison_attempts``."""
        for job in jobs:
            entry = job.handover_entry()
            if entry is None:
                continue
            key = (job.prompt.conversation_id, job.prompt.prompt_id)
            try:
                await asyncio.wait_for(self.generator.index.put(job.partition, key, entry), 10)
            except (KafkaError, TimeoutError) as exc:
                log.warning(
                    "could not record the hand-over of %s (it counts as lost): %r", job.response_id, exc
                )
                continue
            log.info("handed %s over (attempt %d)", job.response_id, entry.attempt)

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        lost = {tp.partition for tp in revoked if tp.topic == PROMPTS_TOPIC}
        if not lost:
            return
        log.info("partitions revoked: %s", sorted(lost))
        stopped = await self._abandon([c for c in self.conversations.values() if c.partition in lost])
        if await self._commit(lost, force=bool(stopped)):
            await self._record_handovers(stopped)
        elif stopped:
            log.warning("not a member of the group any more: %d answers count as lost", len(stopped))
        for p in lost:
            self.partitions.pop(p, None)

    async def assign(self, assigned: set[TopicPartition]) -> None:
        """Load what the log says of each new partition before any of its prompts is handled.

        aiokafka may fetch while this callback runs, so the partitions are paused first and, once
        loaded, sought back to their committed offset: a prompt fetched early is fetched again."""
        new = sorted(
            (tp for tp in assigned if tp.topic == PROMPTS_TOPIC and tp.partition not in self.partitions),
            key=lambda t: t.partition,
        )
        if not new:
            return
        self._consumer.pause(*new)
        answers = [TopicPartition(ANSWERS_TOPIC, tp.partition) for tp in new]
        tokens = [TopicPartition(TOKENS_TOPIC, tp.partition) for tp in new]
        owners = [TopicPartition(OWNERS_TOPIC, tp.partition) for tp in new]
        answers_end = await self._reader.end_offsets(answers)
        tokens_end = await self._reader.end_offsets(tokens)
        owners_end = await self._reader.end_offsets(owners)
        beginnings = await self._reader.beginning_offsets(new)
        for tp in new:
            committed = await self._consumer.committed(tp)
            start = beginnings[tp] if committed is None else committed
            state = await self._load_partition(
                tp.partition,
                start,
                answers_end[TopicPartition(ANSWERS_TOPIC, tp.partition)],
                tokens_end[TopicPartition(TOKENS_TOPIC, tp.partition)],
            )
            state.owners = await self._load_owners(
                tp.partition, owners_end[TopicPartition(OWNERS_TOPIC, tp.partition)]
            )
            self.partitions[tp.partition] = state
            self._consumer.seek(tp, start)
        if not self._paused:
            self._consumer.resume(*new)
        log.info("partitions assigned: %s", [tp.partition for tp in new])

    def loaded(self) -> bool:
        """Ready: the group assigned partitions and every one of them is loaded."""
        assignment = {tp.partition for tp in self._consumer.assignment()}
        return bool(assignment) and assignment <= set(self.partitions)

    async def _load_partition(self, p: int, start: int, answers_end: int, tokens_end: int) -> PartitionState:
        index: dict[IndexKey, IndexEntry] = {}
        async for msg in self._read_partition(TopicPartition(ANSWERS_TOPIC, p), None, answers_end):
            if msg.value is None:
                continue
            try:
                index[decode_key(msg.key)] = decode_entry(msg.value)
            except (ValueError, KeyError, UnicodeDecodeError):
                log.warning("unreadable answer-index record at %s@%d", p, msg.offset)
        unfinished = {e.response_id: e for e in index.values() if e.status == "started"}
        folds: dict[str, AnswerFold] = {}
        if unfinished:
            scan_start = min(e.scan_from for e in unfinished.values())
            async for msg in self._read_partition(TopicPartition(TOKENS_TOPIC, p), scan_start, tokens_end):
                try:
                    event = TOKENS.decode(msg.value, partition=p, offset=msg.offset)
                except DecodeError as exc:
                    log.warning("skipping an undecodable token record: %s", exc)
                    continue
                if event.response_id in unfinished:
                    folds.setdefault(event.response_id, AnswerFold(event.response_id)).apply(event)
        if index:
            log.info(
                "partition %d: from offset %d, %d indexed prompts, %d unfinished (%d found in the log)",
                p,
                start,
                len(index),
                len(unfinished),
                len(folds),
            )
        return PartitionState(OffsetTracker(start), index, folds, tokens_end, start)

    async def _load_owners(self, p: int, end: int) -> dict[str, str]:
        """The owner of each conversation of partition ``p`` (``conversation.owners``)."""
        owners: dict[str, str] = {}
        async for msg in self._read_partition(TopicPartition(OWNERS_TOPIC, p), None, end):
            if msg.key is None or msg.value is None:
                continue
            try:
                owners[msg.key.decode()] = decode_owner(msg.value).owner
            except (ValueError, KeyError, UnicodeDecodeError):
                log.warning("unreadable owner record at %s@%d", p, msg.offset)
        return owners

    async def _read_partition(self, tp: TopicPartition, start: int | None, end: int) -> Any:
        """Every record of ``tp`` from ``start`` (None: the beginning) up to ``end``, read with
        the worker's group-less reader."""
        if start is not None and start >= end:
            return
        self._reader.assign([tp])
        if start is None:
            await self._reader.seek_to_beginning(tp)
        else:
            self._reader.seek(tp, start)
        while await self._reader.position(tp) < end:
            batch = await self._reader.getmany(tp, timeout_ms=1000, max_records=5000)
            for msg in batch.get(tp, []):
                if msg.offset >= end:
                    return
                yield msg


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.assign(assigned)
