"""A broker restart keeps the log: stop it (gracefully or with SIGKILL), start it, read back."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from infra.broker import LocalBroker
from infra.errors import BrokerError
from tests.harness import create_topic, local_broker_settings, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of this module's own: these tests stop and kill it."""
    broker = LocalBroker(local_broker_settings(tmp_path_factory.mktemp("restart") / "kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, key=b"k", partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got: list[bytes] = []
        while len(got) < expected:
            batch = await consumer.getmany(tp, timeout_ms=5000)
            if not batch:
                break
            got += [m.value for m in batch[tp]]
        return got
    finally:
        await consumer.stop()


def test_records_survive_a_graceful_broker_restart(own_broker: LocalBroker) -> None:
    topic = unique("restart")
    values = [f"record-{i}".encode() for i in range(200)]
    asyncio.run(create_topic(own_broker.bootstrap, topic, partitions=1))
    asyncio.run(_produce(own_broker.bootstrap, topic, values))
    pid_before = own_broker.pid()
    own_broker.stop()
    assert not own_broker.running()
    own_broker.start()
    assert own_broker.pid() != pid_before
    assert asyncio.run(_read_all(own_broker.bootstrap, topic, len(values))) == values


def test_acknowledged_records_survive_sigkill_of_the_broker(own_broker: LocalBroker) -> None:
    topic = unique("killed")
    values = [f"acked-{i}".encode() for i in range(200)]
    asyncio.run(create_topic(own_broker.bootstrap, topic, partitions=1))
    asyncio.run(_produce(own_broker.bootstrap, topic, values))
    own_broker.kill()
    assert not own_broker.running()
    own_broker.start()
    assert asyncio.run(_read_all(own_broker.bootstrap, topic, len(values))) == values


def test_a_broker_that_cannot_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = local_broker_settings(tmp_path / "kafka")
        from dataclasses import replace

        broker = LocalBroker(replace(settings, port=taken.getsockname()[1], start_timeout_s=60))
        with pytest.raises(BrokerError) as failure:
            broker.start()
    assert not broker.running()
    assert "broker log tail" in str(failure.value)
    assert "Address already in use" in failure.value.log_tail
