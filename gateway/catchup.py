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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import TopicPartition

from gateway.errors import GatewayError, Unavailable
from schemas.registry import TOKENS_TOPIC

JUMP = 512
"""Seek straight to the next wanted offset when it is further ahead than this."""


class BeyondRetention(GatewayError):
    """The cursor's next offset is no longer in the log."""

    code = "unavailable"


@dataclass(frozen=True, slots=True)
class Read:
    records: list[tuple[int, bytes | None]]
    """(offset, value) of the conversation's records, in order."""
    complete: bool
    """The read covered every offset up to the splice."""


class CatchUp:
    def __init__(self, bootstrap: str, *, size: int, timeout_s: float, partitions: Sequence[int]) -> None:
        self._bootstrap = bootstrap
        self._size = size
        self._timeout_s = timeout_s
        self._tps = [TopicPartition(TOKENS_TOPIC, p) for p in partitions]
        self._free: asyncio.Queue[AIOKafkaConsumer] = asyncio.Queue()
        self._created = 0
        self._all: list[AIOKafkaConsumer] = []
        self._lock = asyncio.Lock()
        self.reads = 0
        self.records_read = 0

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
            max_partition_fetch_bytes=4 * 1024 * 1024,
            client_id="tokenlog-gateway-catchup",
        )
        await asyncio.wait_for(consumer.start(), self._timeout_s)
        consumer.assign(self._tps)
        consumer.pause(*self._tps)
        return consumer

    @contextlib.asynccontextmanager
    async def _consumer(self) -> AsyncIterator[AIOKafkaConsumer]:
        consumer: AIOKafkaConsumer | None = None
        async with self._lock:
            if self._free.empty() and self._created < self._size:
                self._created += 1
                try:
                    consumer = await self._new_consumer()
                except (KafkaError, OSError, TimeoutError) as exc:
                    self._created -= 1
                    raise Unavailable(f"no catch-up consumer: {exc!r}") from exc
                self._all.append(consumer)
        if consumer is None:
            consumer = await self._free.get()
        try:
            yield consumer
        finally:
            consumer.pause(*self._tps)
            self._free.put_nowait(consumer)

    async def bounds(self, partition: int) -> tuple[int, int]:
        """(log start offset, end offset) of the partition."""
        tp = TopicPartition(TOKENS_TOPIC, partition)
        async with self._consumer() as consumer:
            try:
                start = await asyncio.wait_for(consumer.beginning_offsets([tp]), self._timeout_s)
                end = await asyncio.wait_for(consumer.end_offsets([tp]), self._timeout_s)
            except (KafkaError, TimeoutError) as exc:
                raise Unavailable(f"offsets of partition {partition}: {exc!r}") from exc
        return int(start[tp]), int(end[tp])

    async def read(
        self, partition: int, key: bytes, first: int, upto: int, targets: Sequence[int] | None = None
    ) -> Read:
        """The records with ``key`` in ``[first, upto]``; with ``targets`` (every wanted offset,
        ascending) only those are looked for."""
        if upto < first or (targets is not None and not targets):
            return Read([], True)
        tp = TopicPartition(TOKENS_TOPIC, partition)
        found: list[tuple[int, bytes | None]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        self.reads += 1
        async with self._consumer() as consumer:
            consumer.seek(tp, targets[0] if targets else first)
            consumer.resume(tp)
            want = iter(targets) if targets else None
            next_wanted = next(want) if want is not None else first
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise Unavailable(f"catch-up of partition {partition} did not reach {upto} in time")
                try:
                    batch = await consumer.getmany(tp, timeout_ms=min(200, int(remaining * 1000) + 1))
                except OffsetOutOfRangeError as exc:
                    raise BeyondRetention(f"offset {first} of partition {partition} is gone") from exc
                except KafkaError as exc:
                    raise Unavailable(f"catch-up of partition {partition}: {exc!r}") from exc
                records = batch.get(tp, ())
                self.records_read += len(records)
                last = -1
                for msg in records:
                    last = msg.offset
                    if last > upto:
                        return Read(found, True)
                    if msg.key == key:
                        found.append((last, msg.value))
                if last >= upto:
                    return Read(found, True)
                if want is not None and last >= 0:
                    while next_wanted <= last:
                        step = next(want, None)
                        if step is None:
                            return Read(found, True)
                        next_wanted = step
                    if next_wanted - last > JUMP:
                        consumer.seek(tp, next_wanted)
