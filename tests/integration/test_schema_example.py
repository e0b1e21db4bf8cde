"""The example other teams copy (plain aiokafka + fastavro) reads what tokenlog writes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from schemas.codec import TOKENS
from schemas.records import ResponseCompleted, ResponseStarted, TokenDelta, TokenEvent, Usage
from tests.harness import create_topic, unique

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "read_tokens.py"


async def _produce(bootstrap: str, topic: str, events: list[TokenEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, TOKENS.encode(event), key=event.conversation_id.encode())
    finally:
        await producer.stop()


def test_the_plain_fastavro_example_reads_every_event_tokenlog_writes(bootstrap: str) -> None:
    topic = asyncio.run(create_topic(bootstrap, unique("example.tokens"), partitions=2))
    cid = unique("conv")
    t = 1_795_000_000_000
    events: list[TokenEvent] = [
        ResponseStarted(cid, "r-1", "p-1", "u-1", "Say hi", "demo", t),
        TokenDelta(cid, "r-1", 0, "Hi", t + 1),
        TokenDelta(cid, "r-1", 1, " thére 👋", t + 2),
        ResponseCompleted(cid, "r-1", 1, t + 3, "stop", Usage(2, 2, 4)),
    ]
    asyncio.run(_produce(bootstrap, topic, events))

    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--limit",
            str(len(events)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["type"] for line in lines] == [
        "ResponseStarted",
        "TokenDelta",
        "TokenDelta",
        "ResponseCompleted",
    ]
    assert {line["key"] for line in lines} == {cid}
    assert "".join(line["text"] for line in lines if line["type"] == "TokenDelta") == "Hi thére 👋"
    assert lines[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    assert lines[1]["produced_at"].startswith("2026-11-18")
