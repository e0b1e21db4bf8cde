"""Throughput of one generation worker process with the demo generator at zero delay, against
the floor Kafka sets in the same run (a raw produce of as many records from one process).

    python -m bench.worker [--prompts 2000] [--tokens 100] [--coalesce-ms 0]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` or starts a local broker of its own (temporary, free ports).
All prompts are written first; the figures are taken from the worker's own event times (first
ResponseStarted to last terminal event), so the worker's start-up is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.broker import LocalBroker
from infra.process import ManagedProcess, free_port
from infra.settings import BrokerSettings, TopicSettings
from infra.topics import ensure, topic_specs
from schemas.codec import PROMPTS, TOKENS
from schemas.records import TERMINAL_TYPES, PromptSubmitted, ResponseStarted, TokenDelta, now_ms
from schemas.registry import TOKENS_TOPIC

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="tokenlog-bench-") as tmp:
        broker = LocalBroker(BrokerSettings(home=Path(tmp), port=free_port(), controller_port=free_port()))
        broker.start()
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


async def produce_prompts(bootstrap: str, prompts: list[PromptSubmitted]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for p in prompts:
            await producer.send("conversation.prompts", PROMPTS.encode(p), key=p.conversation_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def floor(bootstrap: str, records: int) -> float:
    """Records/s one process produces through aiokafka with the worker's producer settings."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=0)
    await producer.start()
    value = TOKENS.encode(TokenDelta("c-floor", "r-floor", 1, " token", now_ms()))
    try:
        began = time.perf_counter()
        futures = [
            await producer.send(TOKENS_TOPIC, value, key=f"floor-{i % 500}".encode()) for i in range(records)
        ]
        await asyncio.gather(*futures)
        return records / (time.perf_counter() - began)
    finally:
        await producer.stop()


async def collect(bootstrap: str, conversations: set[str], answers: int, timeout_s: float) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        TOKENS_TOPIC,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    first_start, last_end, ended, deltas, chars = None, 0, 0, 0, 0
    deadline = time.monotonic() + timeout_s
    try:
        while ended < answers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {ended}/{answers} answers ended in {timeout_s}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for messages in batch.values():
                for msg in messages:
                    if msg.key.decode() not in conversations:
                        continue
                    event = TOKENS.decode(msg.value)
                    if isinstance(event, ResponseStarted):
                        first_start = min(first_start or event.started_at, event.started_at)
                    elif isinstance(event, TokenDelta):
                        deltas += 1
                        chars += len(event.text)
                    elif isinstance(event, TERMINAL_TYPES):
                        ended += 1
                        last_end = max(last_end, msg.timestamp)
        return {"first_start_ms": first_start, "last_end_ms": last_end, "deltas": deltas, "chars": chars}
    finally:
        await consumer.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(bootstrap: str, prompts: int, tokens: int, coalesce_ms: float, workdir: Path) -> dict[str, Any]:
    asyncio.run(ensure(bootstrap, topic_specs(TopicSettings())))
    run_id = uuid.uuid4().hex[:8]
    conversations = [f"bench-{run_id}-{i}" for i in range(max(1, prompts // 2))]
    batch = [
        PromptSubmitted(
            conversations[i % len(conversations)], f"p-{i}", "bench", f"q {i} [[tokens={tokens}]]", now_ms()
        )
        for i in range(prompts)
    ]
    asyncio.run(produce_prompts(bootstrap, batch))
    port = free_port()
    worker = ManagedProcess(
        "bench-worker",
        [sys.executable, "-m", "pipeline", "worker"],
        workdir / "worker.log",
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOKENLOG_WORKER_GROUP": f"bench-{run_id}",
            "TOKENLOG_WORKER_HTTP_PORT": str(port),
            "TOKENLOG_DEMO_TOKENS_PER_S": "0",
            "TOKENLOG_WORKER_COALESCE_MS": str(coalesce_ms),
        },
    )
    pid = worker.start()
    try:
        cpu_before = cpu_seconds(pid)
        seen = asyncio.run(collect(bootstrap, set(conversations), prompts, timeout_s=600))
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        worker.stop()
    wall_s = max(0.001, (seen["last_end_ms"] - seen["first_start_ms"]) / 1000)
    records = prompts * 2 + seen["deltas"]
    produced_floor = asyncio.run(floor(bootstrap, min(records, 50_000)))
    return {
        "prompts": prompts,
        "tokens_per_answer": tokens,
        "coalesce_ms": coalesce_ms,
        "seconds": wall_s,
        "answers_per_s": prompts / wall_s,
        "tokens_per_s": prompts * tokens / wall_s,
        "deltas": seen["deltas"],
        "records_per_s": records / wall_s,
        "floor_records_per_s": produced_floor,
        "worker_cpu_s": cpu,
        "cpu_us_per_token": cpu / (prompts * tokens) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--coalesce-ms", type=float, nargs="*", default=[0.0, 15.0])
    args = parser.parse_args()
    results = []
    with kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        for coalesce in args.coalesce_ms:
            figures = run(bootstrap, args.prompts, args.tokens, coalesce, Path(tmp))
            results.append(figures)
            print(
                f"coalesce {coalesce:>4.0f} ms: {figures['prompts']} answers x {args.tokens} tokens in "
                f"{figures['seconds']:.1f}s -> {figures['answers_per_s']:.0f} answers/s, "
                f"{figures['tokens_per_s']:.0f} tokens/s, {figures['deltas']} deltas "
                f"({figures['records_per_s']:.0f} records/s; raw produce floor "
                f"{figures['floor_records_per_s']:.0f} records/s), "
                f"worker CPU {figures['cpu_us_per_token']:.1f} us/token",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worker.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
