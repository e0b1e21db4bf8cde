"""Reading conversations straight from the topics for replay: no gateway, no Faust, no group.

Which records are read (``Selection``):

- ``conversation``: one conversation, from its partition (the key's partition), filtered by key
  before anything is decoded;
- ``since``/``until``: the turns whose prompt the broker appended in ``[since, until)``, each read
  **in full**: reading goes on past ``until`` until every selected answer has its terminal event
  (or the end). An answer with no prompt record (retention) counts from its ``ResponseStarted``;
- ``as_of``: the log as it stood at that moment: nothing appended after it is read.

The topics stamp records with the broker's append time (``LogAppendTime``, ``infra/topics.py``), so
timestamps rise with offsets and every boundary is one ``offsets_for_times`` lookup per partition:
the first offset appended at or after the moment. Everything before it is earlier, everything
from it on is not, so no event at a boundary is skipped or taken twice.

Throughput: large fetches (``fetch_max_bytes``), records handled per fetched batch, keys compared
before decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.errors import TopicMismatchError
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from infra.topics import partition_for, shared_partition_count
from pipeline.errors import PipelineError
from pipeline.replay.transcript import Replay
from schemas.codec import PROMPTS, TOKENS
from schemas.errors import DecodeError
from schemas.records import PromptSubmitted, ResponseStarted
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC

PROMPT_LOOKBACK_MS = 60_000
"""Prompts are read from this long before ``since``: an answer started in the range to a prompt
accepted before it belongs to that earlier turn, not to the range."""


STALL_POLLS = 30
"""Empty one-second fetches in a row, with records still due, before the replay gives up."""


class ReplayError(PipelineError):
    """The replay cannot read what was asked (a missing topic, a partition out of range)."""


@dataclass(frozen=True)
class Selection:
    conversation: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    as_of_ms: int | None = None

    def __post_init__(self) -> None:
        if self.since_ms is not None and self.until_ms is not None and self.until_ms <= self.since_ms:
            raise ReplayError("the range is empty: until must be after since")


@dataclass
class ReadStats:
    records: int = 0
    """Records read from the tokens topic."""
    events: int = 0
    """Token events decoded."""
    prompts: int = 0
    bytes: int = 0
    undecodable: list[tuple[str, int, int, str]] = field(default_factory=list)
    """(topic, partition, offset, reason) of records that are not tokenlog records (skipped)."""
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Range:
    start: int
    """First offset to read."""
    select_end: int
    """Records at or past it start nothing new (``until``)."""
    stop: int
    """Never read at or past it (the end when the replay began, or ``as_of``)."""


@dataclass
class ReplaySource:
    bootstrap: str
    tokens_topic: str = TOKENS_TOPIC
    prompts_topic: str = PROMPTS_TOPIC
    fetch_max_bytes: int = 64 * 1024 * 1024
    partition_fetch_bytes: int = 16 * 1024 * 1024
    consumer_options: dict[str, Any] = field(default_factory=dict)
    security: KafkaSecurity = PLAINTEXT
    """TLS and SASL of its clients (``infra/kafka_client.py``)."""

    async def replay(self, selection: Selection, replay: Replay | None = None) -> tuple[Replay, ReadStats]:
        replay = replay or Replay()
        stats = ReadStats()
        began = time.perf_counter()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=self.fetch_max_bytes,
            max_partition_fetch_bytes=self.partition_fetch_bytes,
            **self.security.client_kwargs(),
            **self.consumer_options,
        )
        await consumer.start()
        try:
            keys = await self._read_prompts(consumer, selection, replay, stats)
            await self._read_tokens(consumer, selection, replay, stats, keys)
        finally:
            await consumer.stop()
        stats.seconds = time.perf_counter() - began
        return replay, stats

    # ------------------------------------------------------------------ placement and boundaries

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str, selection: Selection) -> list[int]:
        try:
            count = await shared_partition_count(self.bootstrap, [topic], self.security)
        except TopicMismatchError as exc:
            raise ReplayError(f"cannot replay {topic!r} from {self.bootstrap}: {exc}") from exc
        if selection.conversation is not None:
            return [partition_for(selection.conversation, count)]
        return list(range(count))

    async def _ranges(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], selection: Selection, lookback: int = 0
    ) -> dict[TopicPartition, _Range]:
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)

        async def first_at(ms: int | None, default: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
            if ms is None:
                return dict(default)
            found = await consumer.offsets_for_times(dict.fromkeys(tps, max(0, ms)))
            return {tp: (end[tp] if hit is None else hit.offset) for tp, hit in found.items()}

        since = await first_at(None if selection.since_ms is None else selection.since_ms - lookback, begin)
        until = await first_at(selection.until_ms, end)
        as_of = await first_at(None if selection.as_of_ms is None else selection.as_of_ms + 1, end)
        return {
            tp: _Range(max(since[tp], begin[tp]), min(until[tp], as_of[tp], end[tp]), min(as_of[tp], end[tp]))
            for tp in tps
        }

    # ------------------------------------------------------------------ reading

    async def _scan(
        self,
        consumer: AIOKafkaConsumer,
        ranges: dict[TopicPartition, _Range],
        handle: Callable[[TopicPartition, list[Any]], bool],
    ) -> None:
        """Fetch every partition from its start until ``handle`` says it is done or its stop."""
        todo = {tp for tp, r in ranges.items() if r.start < r.stop}
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, ranges[tp].start)
        idle = 0
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000)
            idle = 0 if batches else idle + 1
            if idle > STALL_POLLS:
                where = {tp.partition: (await consumer.position(tp), ranges[tp].stop) for tp in todo}
                raise ReplayError(
                    f"no records arrive below the end offsets (partition: (position, end)): {where}"
                )
            for tp, fetched in batches.items():
                stop = ranges[tp].stop
                records = (
                    [r for r in fetched if r.offset < stop]
                    if fetched and fetched[-1].offset >= stop
                    else fetched
                )
                more = handle(tp, records)
                if not more or (await consumer.position(tp)) >= stop:
                    todo.discard(tp)
                    consumer.pause(tp)
            if not batches:
                for tp in list(todo):  # a partition whose stop is past what can be fetched
                    if await consumer.position(tp) >= ranges[tp].stop:
                        todo.discard(tp)

    async def _read_prompts(
        self, consumer: AIOKafkaConsumer, selection: Selection, replay: Replay, stats: ReadStats
    ) -> _Keys:
        """The prompts of the selection; which (conversation, prompt) keys are in the range and
        which came before it."""
        keys = _Keys()
        topic = self.prompts_topic
        tps = [TopicPartition(topic, p) for p in await self._partitions(consumer, topic, selection)]
        ranges = await self._ranges(consumer, tps, selection, lookback=PROMPT_LOOKBACK_MS)
        key = None if selection.conversation is None else selection.conversation.encode()
        since = selection.since_ms

        def handle(tp: TopicPartition, records: list[Any]) -> bool:
            for record in records:
                if key is not None and record.key != key:
                    continue
                try:
                    prompt = PROMPTS.decode(record.value, partition=tp.partition, offset=record.offset)
                except DecodeError as exc:
                    stats.undecodable.append((topic, tp.partition, record.offset, exc.reason))
                    continue
                if isinstance(prompt, PromptSubmitted):
                    stats.prompts += 1
                    turn = (prompt.conversation_id, prompt.prompt_id)
                    in_range = since is None or record.timestamp >= since
                    (keys.in_range if in_range else keys.before).add(turn)
                    replay.prompt(tp.partition, prompt, in_range=in_range)
            return True

        await self._scan(consumer, {tp: replace(r, stop=r.select_end) for tp, r in ranges.items()}, handle)
        return keys

    async def _read_tokens(
        self, consumer: AIOKafkaConsumer, selection: Selection, replay: Replay, stats: ReadStats, keys: _Keys
    ) -> None:
        topic = self.tokens_topic
        tps = [TopicPartition(topic, p) for p in await self._partitions(consumer, topic, selection)]
        ranges = await self._ranges(consumer, tps, selection)
        key = None if selection.conversation is None else selection.conversation.encode()
        selected: dict[int, set[str]] = {tp.partition: set() for tp in tps}
        open_answers: dict[int, set[str]] = {tp.partition: set() for tp in tps}
        unstarted = set(keys.in_range)
        """Prompts of the range whose answer has not started yet: their answer may start after it."""

        def chosen(event: ResponseStarted, offset: int, select_end: int) -> bool:
            turn = (event.conversation_id, event.prompt_id)
            if turn in keys.in_range:
                return True  # asked in the range: its answer, whenever it started
            return offset < select_end and turn not in keys.before  # no prompt record: its start

        def handle(tp: TopicPartition, records: list[Any]) -> bool:
            p, select_end = tp.partition, ranges[tp].select_end
            answers, still_open = selected[p], open_answers[p]
            for record in records:
                stats.records += 1
                stats.bytes += len(record.value or b"")
                if key is not None and record.key != key:
                    continue
                try:
                    event = TOKENS.decode(record.value, partition=p, offset=record.offset)
                except DecodeError as exc:
                    stats.undecodable.append((topic, p, record.offset, exc.reason))
                    continue
                stats.events += 1
                rid = event.response_id
                if rid not in answers:
                    if not isinstance(event, ResponseStarted) or not chosen(event, record.offset, select_end):
                        continue  # an answer outside the selection
                    answers.add(rid)
                    still_open.add(rid)
                    unstarted.discard((event.conversation_id, event.prompt_id))
                replay.token(p, record.offset, event, record.value)
                if rid in still_open and replay.finished(rid):
                    still_open.discard(rid)
            position = records[-1].offset + 1 if records else ranges[tp].start
            return position < select_end or bool(still_open) or bool(unstarted)

        await self._scan(consumer, ranges, handle)


@dataclass
class _Keys:
    in_range: set[tuple[str, str]] = field(default_factory=set)
    before: set[tuple[str, str]] = field(default_factory=set)
