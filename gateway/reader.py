"""The one Kafka reader of a gateway process: every assigned partition of ``conversation.tokens``
(no consumer group, so every gateway sees every conversation it serves), from the end of the
log at start-up, published record by record into the hub.

Beside it, once at start-up, a **backfill** reads the last ``backfill_records`` records of each
partition before that end (keys and offsets only, no decoding) into the hub's offset index: without
it, a resume from before the gateway started ("beginning", an old cursor) of any conversation read
the whole partition, once per client — after a gateway restart, a reconnect storm of such resumes
queued for minutes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from gateway.entry import make_entry
from gateway.errors import Unavailable
from gateway.hub import Hub
from gateway.metrics import GatewayMetrics
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from schemas.registry import TOKENS_TOPIC

log = logging.getLogger(__name__)


class TailReader:
    def __init__(
        self,
        bootstrap: str,
        partitions: Sequence[int],
        hub: Hub,
        epoch: str,
        metrics: GatewayMetrics,
        *,
        backfill_records: int = 0,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self._security = security
        self._backfill_records = backfill_records
        self.indexed = backfill_records <= 0
        """The start-up backfill has finished (or there is none)."""
        self._bootstrap = bootstrap
        self._tps = [TopicPartition(TOKENS_TOPIC, p) for p in partitions]
        self._hub = hub
        self._epoch = epoch
        self._metrics = metrics
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.high_watermarks: dict[int, int] = {}
        self.last_probe_ok = 0.0
        """Monotonic time of the last successful offsets request (broker reachable)."""

    async def start(self, timeout_s: float = 30.0) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=1024 * 1024,
            client_id="tokenlog-gateway-reader",
            **self._security.client_kwargs(),
        )
        try:
            await asyncio.wait_for(consumer.start(), timeout_s)
            consumer.assign(self._tps)
            ends = await asyncio.wait_for(consumer.end_offsets(self._tps), timeout_s)
        except (KafkaError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)
            raise Unavailable(f"the tail reader could not start: {exc!r}") from exc
        for tp in self._tps:
            consumer.seek(tp, ends[tp])
            self._hub.start(tp.partition, int(ends[tp]))
            self.high_watermarks[tp.partition] = int(ends[tp])
        self.last_probe_ok = time.monotonic()
        self._consumer = consumer
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._probe())]
        if self._backfill_records > 0:
            self._tasks.append(asyncio.create_task(self._backfill({tp: int(ends[tp]) for tp in self._tps})))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 5)

    def lags(self) -> dict[int, int]:
        return {p: self._hub.lag(p, hw) for p, hw in self.high_watermarks.items()}

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer, hub, epoch = self._consumer, self._hub, self._epoch
        undecodable = self._metrics.undecodable
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            except KafkaError as exc:  # aiokafka reconnects by itself; keep reading
                log.warning("tail read failed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            read_ns = time.monotonic_ns()
            for tp, records in batch.items():
                partition = tp.partition
                for msg in records:
                    key = msg.key
                    entry = (
                        make_entry(
                            msg.value, epoch=epoch, partition=partition, offset=msg.offset, read_ns=read_ns
                        )
                        if key is not None
                        else None
                    )
                    if entry is None or key is None:
                        undecodable.inc()
                        hub.advance(partition, msg.offset)
                        continue
                    try:
                        cid = key.decode()
                    except UnicodeDecodeError:
                        undecodable.inc()
                        hub.advance(partition, msg.offset)
                        continue
                    hub.publish(partition, cid, entry)
                hw = consumer.highwater(tp)
                if hw is not None:
                    self.high_watermarks[partition] = max(self.high_watermarks[partition], hw)

    async def _backfill(self, ends: dict[TopicPartition, int]) -> None:
        """Index the records before the reader's start (see the module docstring)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_bytes=8 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            client_id="tokenlog-gateway-backfill",
            **self._security.client_kwargs(),
        )
        began = time.monotonic()
        try:
            await consumer.start()
            firsts = await consumer.beginning_offsets(list(ends))
            starts = {tp: max(int(firsts[tp]), end - self._backfill_records) for tp, end in ends.items()}
            indexed = 0
            for tp in [tp for tp in ends if starts[tp] < ends[tp]]:  # the hub takes each as it is read
                offsets = await self._offsets_by_key(consumer, tp, starts[tp], ends[tp])
                if self._hub.backfill(tp.partition, starts[tp], offsets):
                    indexed += ends[tp] - starts[tp]
                    self._metrics.indexed_from.labels(str(tp.partition)).set(starts[tp])
            log.info("backfill: %d records indexed in %.1f s", indexed, time.monotonic() - began)
            self.indexed = True
        except (KafkaError, TimeoutError, OSError) as exc:  # the gateway serves on; old resumes read more
            log.warning("backfill stopped: %r", exc)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)

    @staticmethod
    async def _offsets_by_key(
        consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
    ) -> dict[str, list[int]]:
        """Per key, the offsets of ``tp``'s records in ``[start, end)``."""
        offsets: dict[str, list[int]] = {}
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for msg in batch.get(tp, ()):
                if msg.offset >= end:
                    break
                if msg.key is not None:
                    with contextlib.suppress(UnicodeDecodeError):
                        offsets.setdefault(msg.key.decode(), []).append(msg.offset)
        return offsets

    async def _probe(self) -> None:
        """Every second: the log's end offsets (readiness: broker reachable, reader caught up)."""
        assert self._consumer is not None
        while True:
            try:
                ends = await asyncio.wait_for(self._consumer.end_offsets(self._tps), 3)
            except (KafkaError, TimeoutError) as exc:
                log.warning("broker probe failed: %r", exc)
            else:
                for tp, end in ends.items():
                    self.high_watermarks[tp.partition] = max(self.high_watermarks[tp.partition], int(end))
                self.last_probe_ok = time.monotonic()
            for partition, lag in self.lags().items():
                self._metrics.reader_lag.labels(str(partition)).set(lag)
            await asyncio.sleep(1.0)
