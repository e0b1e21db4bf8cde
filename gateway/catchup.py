"""Catch-up reads for resumes: seek a partition of ``conversation.tokens`` to a cursor and read the
conversation's records up to the splice offset.

A small pool of consumers (no group, every partition assigned once and paused) serves every
resume of the process; a read resumes one partition, seeks, reads, and pauses it again. With the
hub's offset index a read jumps over long stretches of other conversations' records, so its cost
follows the events the client missed rather than the partition's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_right
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import TopicPartition

from gateway.errors import GatewayError, Unavailable
from gateway.limits import ReadBudget, acting_user
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from schemas.registry import TOKENS_TOPIC

log = logging.getLogger(__name__)

JUMP = 512
"""Seek straight to the next wanted offset when it is further ahead than this many records, until
reading through an unwanted record costs about 1.25 µs, a seek (a fetch round trip) 0.57 ms with
worker-sized record batches (measured with 1,000 wanted among 1,000,000 records). With bulk
batches of ~10,000 records a seek costs ~2.5 ms, as the broker returns the whole batch that holds
the target, and reading through would be cheaper; the worker's batches are small."""
MAX_TAKE = 4096
"""Records taken from the consumer at a time (each take is one ``Chunk``)."""
FIRST_TAKE = 128
"""The first take of a targeted read is short, so the first missed events go out at once; each
take after it is twice as long, up to ``MAX_TAKE``, so that decoding one never holds the event loop
for long while the first ones are being written."""


class BeyondRetention(GatewayError):
    """The cursor's next offset is no longer in the log."""

    code = "unavailable"


@dataclass(frozen=True, slots=True)
class Read:
    records: list[tuple[int, bytes | None]]
    """(offset, value) of the conversation's records, in order."""
    complete: bool
    """The read covered every offset up to the splice."""


@dataclass(frozen=True, slots=True)
class Chunk:
    records: list[tuple[int, bytes | None]]
    """(offset, value) of the conversation's records in this stretch, in order."""
    through: int
    """Every offset up to this one has been looked at."""
    last: bool = False
    """The read is complete: nothing wanted is left."""


class CatchUp:
    """The pool. Each read holds a consumer; taking one counts against the acting user's budget
    (``limits.ReadBudget``: one user cannot hold the pool) and waits at most ``acquire_timeout_s``
    for a free one (then ``unavailable``, never a wait without end)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        size: int,
        timeout_s: float,
        partitions: Sequence[int],
        security: KafkaSecurity = PLAINTEXT,
        acquire_timeout_s: float = 2.0,
        budget: ReadBudget | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._size = size
        self._timeout_s = timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._budget = budget or ReadBudget(per_user=size)
        self._tps = [TopicPartition(TOKENS_TOPIC, p) for p in partitions]
        self._free: asyncio.Queue[AIOKafkaConsumer] = asyncio.Queue()
        self._created = 0
        self._all: list[AIOKafkaConsumer] = []
        self._lock = asyncio.Lock()
        self.reads = 0
        self.records_read = 0

    async def warm(self) -> None:
        """Connect one consumer ahead of the first resume (which would otherwise pay for it)."""
        async with self._consumer():
            pass

    async def stop(self) -> None:
        for consumer in self._all:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)

    async def _new_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=256 * 1024,
            client_id="tokenlog-gateway-catchup",
            **self._security.client_kwargs(),
        )
        await asyncio.wait_for(consumer.start(), self._timeout_s)
        consumer.assign(self._tps)
        consumer.pause(*self._tps)
        return consumer

    @contextlib.asynccontextmanager
    async def _consumer(self) -> AsyncIterator[AIOKafkaConsumer]:
        with self._budget.hold(acting_user.get()):
            consumer = await self._take()
            try:
                yield consumer
            finally:
                consumer.pause(*self._tps)
                self._free.put_nowait(consumer)

    async def _take(self) -> AIOKafkaConsumer:
        async with self._lock:
            if self._free.empty() and self._created < self._size:
                self._created += 1
                try:
                    consumer = await self._new_consumer()
                except (KafkaError, OSError, TimeoutError) as exc:
                    self._created -= 1
                    log.warning("no catch-up consumer: %r", exc)
                    raise Unavailable("the log cannot be read right now; retry") from exc
                self._all.append(consumer)
                return consumer
        try:
            async with asyncio.timeout(self._acquire_timeout_s):
                return await self._free.get()
        except TimeoutError:
            raise Unavailable(
                f"every catch-up reader is busy (none free within {self._acquire_timeout_s:g} s); retry"
            ) from None

    async def bounds(self, partition: int) -> tuple[int, int]:
        """(log start offset, end offset) of the partition."""
        tp = TopicPartition(TOKENS_TOPIC, partition)
        async with self._consumer() as consumer:
            try:
                start = await asyncio.wait_for(consumer.beginning_offsets([tp]), self._timeout_s)
                end = await asyncio.wait_for(consumer.end_offsets([tp]), self._timeout_s)
            except (KafkaError, TimeoutError) as exc:
                log.warning("offsets of partition %d: %r", partition, exc)
                raise Unavailable(f"the offsets of partition {partition} are not available; retry") from exc
        return int(start[tp]), int(end[tp])

    async def read(
        self, partition: int, key: bytes, first: int, upto: int, targets: Sequence[int] | None = None
    ) -> Read:
        """The records with ``key`` in ``[first, upto]``; with ``targets`` (every wanted offset,
        ascending) only those are looked for."""
        found: list[tuple[int, bytes | None]] = []
        async with contextlib.aclosing(self.chunks(partition, key, first, upto, targets)) as chunks:
            async for chunk in chunks:
                found.extend(chunk.records)
        return Read(found, True)

    async def chunks(
        self, partition: int, key: bytes, first: int, upto: int, targets: Sequence[int] | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """``read`` as it goes: one ``Chunk`` per fetch, so a caller can pass the first events on
        before the last are read. Ends once ``[first, upto]`` (or every target) is covered."""
        if upto < first or (targets is not None and not targets):
            return
        tp = TopicPartition(TOKENS_TOPIC, partition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        self.reads += 1
        async with self._consumer() as consumer:
            position = targets[0] if targets else first
            consumer.seek(tp, position)
            consumer.resume(tp)
            index = 0  # the first target not passed yet
            limit = FIRST_TAKE
            while True:
                take: int | None = None
                seek = None
                if targets is not None:
                    seek, take = plan(targets, index, position, limit=limit)
                    limit = min(2 * limit, MAX_TAKE)
                    if seek is not None:
                        consumer.seek(tp, seek)
                        position = seek
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise Unavailable(f"catch-up of partition {partition} did not reach {upto} in time")
                try:
                    batch = await consumer.getmany(
                        tp, timeout_ms=min(200, int(remaining * 1000) + 1), max_records=take
                    )
                except OffsetOutOfRangeError as exc:
                    raise BeyondRetention(f"offset {first} of partition {partition} is gone") from exc
                except KafkaError as exc:
                    log.warning("catch-up of partition %d: %r", partition, exc)
                    raise Unavailable(f"the catch-up of partition {partition} failed; retry") from exc
                records = batch.get(tp, ())
                if not records:
                    continue
                self.records_read += len(records)
                found = [(msg.offset, msg.value) for msg in records if msg.key == key and msg.offset <= upto]
                last = records[-1].offset
                position = last + 1
                if targets is not None:
                    index = bisect_right(targets, last, lo=index)
                    done = index >= len(targets)
                else:
                    done = last >= upto
                done = done or last >= upto
                yield Chunk(found, upto if done else last, done)
                if done:
                    return


def plan(
    targets: Sequence[int], index: int, position: int, jump: int = JUMP, limit: int = MAX_TAKE
) -> tuple[int | None, int]:
    """Where the next fetch of a targeted read starts and how many records it takes.

    ``targets[index]`` is the next wanted offset and ``position`` the consumer's. Reading through
    up to ``jump`` unwanted records is cheaper than a seek (a fetch round trip); further apart, the
    read seeks. It takes the run of targets that follow each other within ``jump``, and no more, so
    a fetch never unpacks records past the last one it wants when the next is far.
    """
    nxt = targets[index]
    seek = nxt if nxt - position > jump or nxt < position else None
    start = position if seek is None else seek
    end = index
    while end + 1 < len(targets) and targets[end + 1] - targets[end] <= jump:
        end += 1
    return seek, min(targets[end] - start + 1, limit)
