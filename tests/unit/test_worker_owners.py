"""The worker applies the ownership rule before answering: with the in-memory twins of the sink,
the answer index and the owner log (the Kafka path is in tests/gateway/test_ownership_race.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka.structs import TopicPartition

from pipeline.answer_index import MemoryAnswerIndex
from pipeline.generation import Generator
from pipeline.metrics import WorkerMetrics
from pipeline.offsets import OffsetTracker
from pipeline.owners import MemoryOwnerLog, OwnerEntry
from pipeline.providers.demo import DemoProvider
from pipeline.settings import DemoSettings, WorkerSettings
from pipeline.sink import MemoryEventSink
from pipeline.worker import PartitionState, Worker
from schemas.codec import PROMPTS
from schemas.records import CancelRequested, PromptRecord, PromptSubmitted, ResponseStarted, now_ms
from schemas.registry import PROMPTS_TOPIC
from tests.harness import wait_for

P = 2


@dataclass
class Message:
    partition: int
    offset: int
    key: bytes
    value: bytes


@asynccontextmanager
async def _worker(state: PartitionState) -> AsyncIterator[tuple[Worker, MemoryEventSink, MemoryOwnerLog]]:
    """A worker that never connects (its Kafka clients are built, not started, then closed)."""
    metrics = WorkerMetrics()
    provider = DemoProvider(DemoSettings(tokens_per_s=0))
    worker = Worker(WorkerSettings(bootstrap_servers="127.0.0.1:1"), provider, metrics)
    sink, owners = MemoryEventSink(), MemoryOwnerLog()
    worker.generator = Generator(provider, sink, MemoryAnswerIndex(), metrics, lambda p: 0, 0)
    worker.owner_log = owners
    worker.partitions[P] = state
    try:
        yield worker, sink, owners
    finally:
        for client in (worker._producer, worker._consumer, worker._reader):
            await client.stop()


def _state(owners: dict[str, str] | None = None) -> PartitionState:
    return PartitionState(OffsetTracker(0), {}, {}, 0, 0, dict(owners or {}))


def _batch(records: list[PromptRecord]) -> dict[TopicPartition, list[Message]]:
    messages = [
        Message(P, offset, r.conversation_id.encode(), PROMPTS.encode(r)) for offset, r in enumerate(records)
    ]
    return {TopicPartition(PROMPTS_TOPIC, P): messages}


def _prompt(cid: str, pid: str, user: str) -> PromptSubmitted:
    return PromptSubmitted(cid, pid, user, f"secret of {user} [[tokens=3]] [[rate=0]]", now_ms())


def _refused(worker: Worker, command: str) -> float:
    value = worker.metrics.registry.get_sample_value(
        "tokenlog_worker_prompts_refused_total", {"command": command}
    )
    return value or 0.0


async def test_the_first_prompt_claims_and_a_strangers_prompts_are_skipped_with_nothing_written() -> None:
    state = _state()
    async with _worker(state) as (worker, sink, owners):
        await _first_prompt_claims(worker, sink, owners, state)


async def _first_prompt_claims(
    worker: Worker, sink: MemoryEventSink, owners: MemoryOwnerLog, state: PartitionState
) -> None:
    records: list[PromptRecord] = [
        _prompt("c-1", "p-1", "alice"),
        _prompt("c-1", "p-2", "mallory"),
        CancelRequested("c-1", "x-1", "mallory", now_ms()),
        _prompt("c-1", "p-3", "alice"),
    ]
    await worker._handle(_batch(records))
    assert owners.entries == {(P, "c-1"): OwnerEntry("alice", 0)}
    await wait_for(lambda: state.tracker.committable() == 4, 10)
    started = [e for e in sink.events() if isinstance(e, ResponseStarted)]
    assert [(e.prompt_id, e.user_id) for e in started] == [("p-1", "alice"), ("p-3", "alice")]
    assert all("mallory" not in e.prompt_text for e in started)
    assert {e.response_id for e in sink.events()} == {e.response_id for e in started}  # nothing for p-2
    assert (_refused(worker, "prompt"), _refused(worker, "cancel")) == (1.0, 1.0)


async def test_an_owner_loaded_from_the_owner_log_refuses_a_stranger_who_comes_first_after_a_takeover() -> (
    None
):
    state = _state({"c-2": "alice"})  # what _load_owners read from conversation.owners
    async with _worker(state) as (worker, sink, owners):
        await _loaded_owner_refuses(worker, sink, owners, state)


async def _loaded_owner_refuses(
    worker: Worker, sink: MemoryEventSink, owners: MemoryOwnerLog, state: PartitionState
) -> None:
    await worker._handle(_batch([_prompt("c-2", "p-9", "mallory"), _prompt("c-3", "p-1", "mallory")]))
    await wait_for(lambda: state.tracker.committable() == 2, 10)
    started = [e for e in sink.events() if isinstance(e, ResponseStarted)]
    assert [(e.conversation_id, e.user_id) for e in started] == [("c-3", "mallory")]
    assert owners.entries == {(P, "c-3"): OwnerEntry("mallory", 1)}  # only the new conversation's
    assert _refused(worker, "prompt") == 1.0
