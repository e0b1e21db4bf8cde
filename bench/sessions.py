"""Recovery time of the session-state app for N conversations.

    python -m bench.sessions [--conversations 10000] [--store rocksdb:// memory://]

Writes N short conversations straight into the topics (a prompt, a start, 5 deltas, an end
each), lets a fresh session-state app materialise them, SIGKILLs it and measures:

- ``build``: from start to all events applied (the app's committed offsets at the topics' end);
- ``restart``: same data directory (a crashed process coming back on the same machine);
- ``fresh``: empty data directory (another machine taking over: restore from the changelog).

Uses ``KAFKA_BOOTSTRAP_SERVERS`` or starts a local broker of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from bench import SERVICE_HEADERS
from bench.worker import RESULTS, kafka
from infra.process import ManagedProcess, free_port, wait_until
from infra.settings import TopicSettings
from infra.topics import describe, ensure, topic_specs
from schemas.codec import PROMPTS, TOKENS
from schemas.records import (
    PromptSubmitted,
    ResponseCompleted,
    ResponseStarted,
    TokenDelta,
    TokenEvent,
    now_ms,
)
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC


async def write_conversations(bootstrap: str, count: int, run_id: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        t = now_ms()
        for i in range(count):
            cid = f"rec-{run_id}-{i}"
            key = cid.encode()
            prompt = PromptSubmitted(cid, "p-1", "u-1", f"question {i}", t)
            meta = await (await producer.send(PROMPTS_TOPIC, PROMPTS.encode(prompt), key=key))
            p, rid = meta.partition, f"r-{i}"
            events: list[TokenEvent] = [ResponseStarted(cid, rid, "p-1", "u-1", prompt.text, "demo", t)]
            events += [TokenDelta(cid, rid, s, f" word{s}", t) for s in range(5)]
            events.append(ResponseCompleted(cid, rid, 4, t))
            for event in events:
                await producer.send(TOKENS_TOPIC, TOKENS.encode(event), key=key, partition=p)
        await producer.flush()
    finally:
        await producer.stop()


async def lag(bootstrap: str, group: str, topics: tuple[str, ...] = (PROMPTS_TOPIC, TOKENS_TOPIC)) -> int:
    """Records of ``topics`` that ``group`` has not committed yet; -1 while it has no coordinator."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        try:
            committed = await admin.list_consumer_group_offsets(group)
        except KafkaError:
            return -1  # the group has no coordinator yet: nothing committed
        found = await describe(bootstrap, [TOKENS_TOPIC])
        partitions = range(found[TOKENS_TOPIC].partitions)
        tps = [TopicPartition(t, p) for t in topics for p in partitions]
        ends = await consumer.end_offsets(tps)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


def start(bootstrap: str, app_id: str, data_dir: Path, store: str, log: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = ManagedProcess(
        "sessions",
        [sys.executable, "-m", "pipeline", "sessions"],
        log,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOKENLOG_SESSIONS_APP_ID": app_id,
            "TOKENLOG_SESSIONS_PORT": str(port),
            "TOKENLOG_SESSIONS_DATA_DIR": str(data_dir),
            "TOKENLOG_SESSIONS_STORE": store,
            "TOKENLOG_SESSIONS_SESSION_TIMEOUT_S": "6",
        },
    )
    proc.start()
    return proc, f"http://127.0.0.1:{port}"


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", headers=SERVICE_HEADERS, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def measure(bootstrap: str, count: int, store: str, workdir: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    app_id = f"bench-sessions-{run_id}"
    asyncio.run(ensure(bootstrap, topic_specs(TopicSettings())))
    began = time.monotonic()
    asyncio.run(write_conversations(bootstrap, count, run_id))
    written_s = time.monotonic() - began
    data = workdir / f"state-{run_id}"
    figures: dict[str, Any] = {"conversations": count, "store": store, "write_s": written_s}

    started: list[ManagedProcess] = []
    try:
        began = time.monotonic()
        proc, url = start(bootstrap, app_id, data, store, workdir / f"{run_id}-build.log")
        started.append(proc)
        wait_until(lambda: asyncio.run(lag(bootstrap, app_id)) == 0, 900, interval_s=0.5, what="build")
        figures["build_s"] = time.monotonic() - began
        proc.kill()

        for phase, directory in (("restart", data), ("fresh", workdir / f"fresh-{run_id}")):
            began = time.monotonic()
            proc, url = start(bootstrap, app_id, directory, store, workdir / f"{run_id}-{phase}.log")
            started.append(proc)
            wait_until(lambda u=url: ready(u), 900, interval_s=0.2, what=f"{phase} ready")  # type: ignore[misc]
            figures[f"{phase}_ready_s"] = time.monotonic() - began
            wait_until(
                lambda: asyncio.run(lag(bootstrap, app_id)) == 0,
                900,
                interval_s=0.5,
                what=f"{phase} caught up",
            )
            figures[f"{phase}_caught_up_s"] = time.monotonic() - began
            sample = f"rec-{run_id}-{count - 1}"
            body = httpx.get(f"{url}/sessions/{sample}", headers=SERVICE_HEADERS, timeout=10).json()
            if body.get("turns", [{}])[0].get("answer") != "".join(f" word{s}" for s in range(5)):
                raise AssertionError(f"{phase}: the recovered snapshot is wrong: {body}")
            proc.kill()
    finally:
        for proc in started:
            proc.kill()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--store", nargs="*", default=["rocksdb://", "memory://"])
    args = parser.parse_args()
    results = []
    keep = os.environ.get("TOKENLOG_BENCH_KEEP")
    with kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        for store in args.store:
            figures = measure(bootstrap, args.conversations, store, Path(keep or tmp))
            results.append(figures)
            print(
                f"{store:12} {figures['conversations']} conversations: written in {figures['write_s']:.1f}s, "
                f"materialised in {figures['build_s']:.1f}s; after SIGKILL ready (caught up) in "
                f"{figures['restart_ready_s']:.1f}s ({figures['restart_caught_up_s']:.1f}s) on the same disk,"
                " "
                f"{figures['fresh_ready_s']:.1f}s ({figures['fresh_caught_up_s']:.1f}s) on an empty one",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sessions.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
