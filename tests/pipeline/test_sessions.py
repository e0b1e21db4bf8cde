"""The session-state app materialises conversations from the real log."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from infra.process import wait_until
from infra.settings import TopicSettings
from pipeline.ids import response_id
from schemas.cursor import Cursor, parse
from schemas.records import CancelRequested, PromptSubmitted, TokenDelta, now_ms
from schemas.registry import TOKENS_TOPIC
from tests.harness import SERVICE_HEADERS, ServiceRunner, unique
from tests.pipeline.helpers import (
    all_finished,
    caught_up,
    get_snapshot,
    read_transcript,
    snapshot_at,
    start_sessions,
    start_worker,
    submit,
    turns_from_log,
)

pytestmark = pytest.mark.integration


async def _produce_garbage(bootstrap: str, cid: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic in ("conversation.prompts", "conversation.tokens"):
            await producer.send_and_wait(topic, b"not avro at all", key=cid.encode())
    finally:
        await producer.stop()


def _snapshot_turns(snap: dict) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return [(t["prompt_id"], t["status"], t["answer"]) for t in snap["turns"]]


def test_snapshot_of_a_scripted_conversation_equals_the_log_and_names_its_last_event(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path
) -> None:
    start_worker(services, bootstrap, "w1", unique("group"), {"TOKENLOG_WORKER_COALESCE_MS": "0"})
    _, url = start_sessions(services, bootstrap, "s1", unique("sessions"), data_dir=str(tmp_path / "s1"))
    cid = unique("conv")
    ids = ["p-1", "p-2", "p-3", "p-4"]
    asyncio.run(_produce_garbage(bootstrap, cid))  # an undecodable record first: skipped, not a stall
    [(partition, _), *_] = asyncio.run(
        submit(
            bootstrap,
            PromptSubmitted(cid, "p-1", "u-1", "First [[tokens=12]] [[rate=0]]", now_ms(), "laptop"),
            PromptSubmitted(cid, "p-2", "u-1", "Fails [[tokens=30]] [[fail_after=4]] [[rate=0]]", now_ms()),
            PromptSubmitted(cid, "p-3", "u-1", "Long one [[tokens=300]] [[rate=60]]", now_ms(), "phone"),
        )
    )
    asyncio.run(
        read_transcript(
            bootstrap,
            partition,
            [cid],
            lambda t: (
                sum(
                    isinstance(e, TokenDelta) and e.response_id == response_id(cid, "p-3")
                    for _, e in t.events
                )
                >= 5
            ),
        )
    )
    asyncio.run(
        submit(
            bootstrap,
            CancelRequested(cid, "x-1", "u-1", now_ms(), prompt_id="p-3", device_id="phone"),
            PromptSubmitted(cid, "p-4", "u-1", "Last [[tokens=8]] [[rate=0]]", now_ms()),
        )
    )
    transcript = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(ids)))
    last_offset = transcript.events[-1][0]
    assert len(transcript.undecodable) == 1

    snap = asyncio.run(snapshot_at(url, cid, last_offset))
    assert _snapshot_turns(snap) == turns_from_log(transcript)
    assert [t[1] for t in _snapshot_turns(snap)] == ["completed", "failed", "cancelled", "completed"]
    cursor = parse(snap["cursor"])
    assert isinstance(cursor, Cursor)
    assert cursor.partition == partition
    # At or past the conversation's last event: the cursor is how far the partition was applied.
    assert cursor.last_offset >= last_offset
    assert snap["owner"] == "u-1"
    assert snap["live"] is None
    assert snap["pending"] == []

    import httpx

    metrics = httpx.get(f"{url}/metrics", headers=SERVICE_HEADERS, timeout=10).text
    # At least the records this test wrote (the shared topics may hold other tests' too).
    for topic in ("conversation.tokens", "conversation.prompts"):
        found = re.search(rf'tokenlog_sessions_decode_errors_total{{topic="{topic}"}} ([0-9.]+)', metrics)
        assert found is not None
        assert float(found.group(1)) >= 1
    assert 'tokenlog_sessions_snapshots_served_total{status="200"}' in metrics

    from tests.harness import wait_for

    def counted() -> bool:
        body: dict[str, Any] = httpx.get(
            f"{url}/analytics/models/tokenlog-demo-1", headers=SERVICE_HEADERS, timeout=10
        ).json()
        both = [body["current"], body["previous"]]
        return bool(
            sum(w["started"] for w in both) >= 4
            and sum(w["completed"] for w in both) >= 2
            and sum(w["failed"] for w in both) >= 1
            and sum(w["cancelled"] for w in both) >= 1
            and max(w["ttft_max_ms"] for w in both) > 0
        )

    asyncio.run(wait_for(counted, timeout_s=30))
    exposed = httpx.get(f"{url}/metrics", headers=SERVICE_HEADERS, timeout=10).text
    assert 'tokenlog_sessions_usage_current_window{figure="started",model="tokenlog-demo-1"}' in exposed


def test_an_unknown_conversation_is_a_clear_404(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path
) -> None:
    _, url = start_sessions(services, bootstrap, "s1", unique("sessions"), data_dir=str(tmp_path / "s1"))
    never = unique("never")
    status, body = get_snapshot(url, never)
    assert status == 404
    assert body["error"]["code"] == "unknown_conversation"
    partition = body["partition"]
    # Once the app has applied a record of that partition, the 404 says up to where: the
    # conversation has no event at or before that cursor (a gateway hydrates it without a read).
    offset = asyncio.run(_produce_raw(bootstrap, partition))

    def applied_past_it() -> bool:
        _, later = get_snapshot(url, never)
        cursor = parse(later["cursor"]) if later["cursor"] else None
        return isinstance(cursor, Cursor) and cursor.partition == partition and cursor.last_offset >= offset

    wait_until(applied_past_it, 60, what="the 404 to carry the applied cursor")


async def _produce_raw(bootstrap: str, partition: int) -> int:
    """A record that is no tokenlog event (the app skips it, and has applied its offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(TOKENS_TOPIC, b"not avro", key=b"someone", partition=partition)
        return int(meta.offset)
    finally:
        await producer.stop()


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_sigkill_mid_answer_then_restart_recovers_without_doubling_or_losing_text(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path, store: str
) -> None:
    start_worker(services, bootstrap, "w1", unique("group"), {"TOKENLOG_WORKER_COALESCE_MS": "0"})
    app_id, data_dir = unique("sessions"), str(tmp_path / "state")
    env = {"TOKENLOG_SESSIONS_STORE": store}
    first, url = start_sessions(services, bootstrap, "s1", app_id, data_dir=data_dir, env=env)
    cid = unique("conv")
    # The kill must come mid-answer in the app too: let it read the earlier tests' tokens first.
    asyncio.run(caught_up(bootstrap, url, cid))
    done = PromptSubmitted(cid, "p-1", "u-1", "Short [[tokens=10]] [[rate=0]]", now_ms())
    running = PromptSubmitted(cid, "p-2", "u-1", "Long [[tokens=150]] [[rate=40]]", now_ms())
    [(partition, _), _] = asyncio.run(submit(bootstrap, done, running))
    partial = asyncio.run(
        read_transcript(
            bootstrap,
            partition,
            [cid],
            lambda t: (
                sum(
                    isinstance(e, TokenDelta) and e.response_id == response_id(cid, "p-2")
                    for _, e in t.events
                )
                >= 20
            ),
        )
    )
    before = asyncio.run(snapshot_at(url, cid, partial.events[-1][0]))
    assert before["live"] is not None
    assert before["live"]["answer"]
    first.kill()

    began = __import__("time").monotonic()
    _, url = start_sessions(services, bootstrap, "s1-again", app_id, data_dir=data_dir, env=env)
    recovered_in = __import__("time").monotonic() - began
    transcript = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p-1", "p-2"])))
    after = asyncio.run(snapshot_at(url, cid, transcript.events[-1][0]))
    assert _snapshot_turns(after) == turns_from_log(transcript)
    assert after["turns"][1]["answer"].startswith(before["live"]["answer"])
    assert _snapshot_turns(after)[0] == _snapshot_turns(before)[0]
    print(f"\n{store}: restart to ready (recovery included) in {recovered_in:.1f}s")


def test_two_workers_share_the_tables_and_either_answers_for_any_conversation(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path
) -> None:
    from tests.harness import wait_for

    start_worker(services, bootstrap, "w1", unique("group"), {"TOKENLOG_DEMO_TOKENS_PER_S": "0"})
    app_id = unique("sessions")
    _, url1 = start_sessions(services, bootstrap, "s1", app_id, data_dir=str(tmp_path / "s1"))
    _, url2 = start_sessions(services, bootstrap, "s2", app_id, data_dir=str(tmp_path / "s2"))
    conversations = [unique("conv") for _ in range(12)]
    placed = asyncio.run(
        submit(
            bootstrap,
            *[
                PromptSubmitted(cid, "p-1", "u-1", f"Hello {cid} [[tokens=4]]", now_ms())
                for cid in conversations
            ],
        )
    )
    assert len({p for p, _ in placed}) > 1, "the conversations all landed in one partition"

    import httpx

    def both_ready() -> bool:
        try:
            return all(
                httpx.get(f"{u}/readyz", headers=SERVICE_HEADERS, timeout=2).status_code == 200
                for u in (url1, url2)
            )
        except httpx.HTTPError:
            return False

    asyncio.run(wait_for(both_ready, timeout_s=60))
    for cid, (partition, _) in zip(conversations, placed, strict=True):
        transcript = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p-1"])))
        for url in (url1, url2):
            snap = asyncio.run(snapshot_at(url, cid, transcript.events[-1][0]))
            assert snap["conversation_id"] == cid
            assert _snapshot_turns(snap) == turns_from_log(transcript)

    # The usage table is partitioned by model: both workers answer with the one owner's figures.
    def usage_from(url: str) -> tuple[int, int]:
        body = httpx.get(
            f"{url}/analytics/models/tokenlog-demo-1", headers=SERVICE_HEADERS, timeout=10
        ).json()
        windows = (body["current"], body["previous"])
        return sum(w["started"] for w in windows), sum(w["completed"] for w in windows)

    # Figures grow while the app works through older events of the shared topics; once it has
    # caught up, both workers give the same figures.
    def settled() -> bool:
        first = usage_from(url1)
        return first[1] >= len(conversations) and first == usage_from(url2)

    asyncio.run(wait_for(settled, timeout_s=60, interval_s=0.5))


async def _interleaved_answers(
    bootstrap: str, cids: list[str], deltas: int, waves: int, applied: Any
) -> dict[str, tuple[int, int]]:
    """One answer per conversation, their events interleaved (so the app's batches hold several
    partitions) and written in ``waves``, each awaited with ``applied(last)`` before the next (so
    each answer's state is read back from the store by later batches); per conversation, its
    partition and the offset of its last event."""
    from aiokafka import AIOKafkaProducer

    from schemas.codec import TOKENS
    from schemas.records import ResponseCompleted, ResponseStarted

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        rows: list[list[Any]] = [
            [ResponseStarted(cid, f"r-{cid}", "p-1", "u-1", "question", "m", now_ms()) for cid in cids]
        ]
        rows += [
            [TokenDelta(cid, f"r-{cid}", i, f" {cid[-4:]}:{i}", now_ms()) for cid in cids]
            for i in range(deltas)
        ]
        rows.append([ResponseCompleted(cid, f"r-{cid}", deltas - 1, now_ms()) for cid in cids])
        last: dict[str, tuple[int, int]] = {}
        size = -(-len(rows) // waves)
        for wave in range(0, len(rows), size):
            futures = [
                (
                    e.conversation_id,
                    await producer.send(TOKENS_TOPIC, TOKENS.encode(e), key=e.conversation_id.encode()),
                )
                for row in rows[wave : wave + size]
                for e in row
            ]
            for cid, future in futures:
                meta = await future
                last[cid] = (meta.partition, meta.offset)
            await applied(last)
        return last
    finally:
        await producer.stop()


async def _changelog_partitions(
    bootstrap: str, topic: str, partitions: int, keys: set[bytes]
) -> dict[bytes, set[int]]:
    """The partitions of ``topic`` each of ``keys`` was written to."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: dict[bytes, set[int]] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                for record in records:
                    if record.key in keys:
                        found.setdefault(record.key, set()).add(tp.partition)
        return found
    finally:
        await consumer.stop()


def test_batches_across_partitions_keep_each_conversation_whole_in_its_own_partition(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path
) -> None:
    """The app applies tokens a batch at a time; Faust's RocksDB store and changelog place a
    table key by the event being processed, so each key must be read and written under its own
    event, never the batch's last (a read from another partition's store started the answer over)."""
    app_id = unique("sessions")
    env = {"TOKENLOG_SESSIONS_STORE": "rocksdb://"}
    _, url = start_sessions(services, bootstrap, "s1", app_id, data_dir=str(tmp_path / "s1"), env=env)
    cids = [unique("conv") for _ in range(24)]
    deltas = 40

    async def applied(last: dict[str, tuple[int, int]]) -> None:
        for cid, (_, offset) in last.items():
            await snapshot_at(url, cid, offset)

    last = asyncio.run(_interleaved_answers(bootstrap, cids, deltas, 4, applied))
    assert len({p for p, _ in last.values()}) > 1, "the conversations all landed in one partition"
    for cid, (_, offset) in last.items():
        snap = asyncio.run(snapshot_at(url, cid, offset))
        expected = "".join(f" {cid[-4:]}:{i}" for i in range(deltas))
        assert _snapshot_turns(snap) == [("p-1", "completed", expected)], cid
    keys = {cid.encode() for cid in cids}
    for table in ("sessions", "live"):
        placed = asyncio.run(
            _changelog_partitions(bootstrap, f"{app_id}-{table}-changelog", provisioned.partitions, keys)
        )
        assert placed.keys() == keys, f"{table}: a conversation never reached its changelog"
        for cid in cids:
            assert placed[cid.encode()] == {last[cid][0]}, f"{table}: {cid} written outside its partition"
