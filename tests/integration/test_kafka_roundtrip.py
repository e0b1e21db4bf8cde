"""The real broker round-trips keyed records with an idempotent, acks=all producer."""

from __future__ import annotations

from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from infra.settings import TopicSettings
from schemas.registry import TOKENS_TOPIC
from tests.harness import unique

pytestmark = pytest.mark.integration


async def test_idempotent_producer_round_trips_and_keyed_records_share_a_partition(
    bootstrap: str, provisioned: TopicSettings
) -> None:
    conversations = [unique("conv") for _ in range(8)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    sent: dict[str, list[tuple[int, int, bytes]]] = defaultdict(list)
    try:
        for seq in range(10):
            for cid in conversations:
                value = f"{cid}:{seq}".encode()
                meta = await producer.send_and_wait(TOKENS_TOPIC, value, key=cid.encode())
                sent[cid].append((meta.partition, meta.offset, value))
    finally:
        await producer.stop()

    for cid, records in sent.items():
        assert len({partition for partition, _, _ in records}) == 1, f"{cid} spread over partitions"
        offsets = [offset for _, offset, _ in records]
        assert offsets == sorted(offsets), "a conversation's records are in produce order"
    assert {r[0][0] for r in sent.values()} <= set(range(provisioned.partitions))

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        for cid, records in sent.items():
            partition, first, _ = records[0]
            tp = TopicPartition(TOKENS_TOPIC, partition)
            consumer.assign([tp])
            consumer.seek(tp, first)
            got: list[bytes] = []
            while len(got) < len(records):
                batch = await consumer.getmany(tp, timeout_ms=5000)
                assert batch, f"no records for {cid} within 5s"
                got += [m.value for m in batch[tp] if m.key == cid.encode()]
            assert got[: len(records)] == [value for _, _, value in records]
    finally:
        await consumer.stop()
