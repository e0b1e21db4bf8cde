"""Helpers for pipeline tests: submit commands like the gateway does, read answers back."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from infra.kafka_client import PLAINTEXT, KafkaSecurity
from infra.process import ManagedProcess
from infra.services import http_ok
from schemas.answers import AnswerFold
from schemas.codec import PROMPTS, TOKENS
from schemas.errors import DecodeError
from schemas.records import PromptRecord, ResponseStarted, TokenEvent
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC
from tests.harness import SERVICE_HEADERS, ServiceRunner, wait_for


async def submit(
    bootstrap: str, *records: PromptRecord, security: KafkaSecurity = PLAINTEXT
) -> list[tuple[int, int]]:
    """Produce commands to conversation.prompts (idempotent, acks=all); (partition, offset) each."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, **security.client_kwargs()
    )
    await producer.start()
    try:
        placed = []
        for record in records:
            meta = await producer.send_and_wait(
                PROMPTS_TOPIC, PROMPTS.encode(record), key=record.conversation_id.encode()
            )
            placed.append((meta.partition, meta.offset))
        return placed
    finally:
        await producer.stop()


@dataclass
class Transcript:
    """Every event of some conversations in log order, and the answers the reader rule builds."""

    events: list[tuple[int, TokenEvent]] = field(default_factory=list)
    answers: dict[str, AnswerFold] = field(default_factory=dict)
    undecodable: list[int] = field(default_factory=list)
    """Offsets of records that are not tokenlog events (skipped, as every reader does)."""

    def add(self, offset: int, event: TokenEvent) -> None:
        self.events.append((offset, event))
        self.answers.setdefault(event.response_id, AnswerFold(event.response_id)).apply(event)

    def by_prompt(self) -> dict[str, AnswerFold]:
        return {a.started.prompt_id: a for a in self.answers.values() if a.started is not None}

    def starts(self, prompt_id: str) -> list[ResponseStarted]:
        return [e for _, e in self.events if isinstance(e, ResponseStarted) and e.prompt_id == prompt_id]


async def read_transcript(
    bootstrap: str,
    partition: int,
    conversations: Iterable[str],
    until: Any,
    *,
    timeout_s: float = 60.0,
    start: int = 0,
    security: KafkaSecurity = PLAINTEXT,
) -> Transcript:
    """Read ``conversation.tokens[partition]`` from ``start`` until ``until(transcript)`` holds."""
    wanted = set(conversations)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        **security.client_kwargs(),
    )
    await consumer.start()
    tp = TopicPartition(TOKENS_TOPIC, partition)
    transcript = Transcript()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not until(transcript):
            if loop.time() > deadline:
                raise TimeoutError(f"condition not met in {timeout_s}s; have {len(transcript.events)} events")
            batch = await consumer.getmany(tp, timeout_ms=200)
            for msg in batch.get(tp, []):
                if msg.key is not None and msg.key.decode() in wanted:
                    try:
                        event = TOKENS.decode(msg.value, partition=partition, offset=msg.offset)
                    except DecodeError:
                        transcript.undecodable.append(msg.offset)
                        continue
                    transcript.add(msg.offset, event)
        return transcript
    finally:
        await consumer.stop()


def every_answer_finished(t: Transcript) -> bool:
    """At least one answer, and every answer read has its terminal event."""
    return bool(t.answers) and all(a.finished for a in t.answers.values())


def all_finished(prompt_ids: Iterable[str]) -> Any:
    ids = set(prompt_ids)

    def check(t: Transcript) -> bool:
        done = {p for p, a in t.by_prompt().items() if a.finished}
        return ids <= done

    return check


def start_worker(
    services: ServiceRunner,
    bootstrap: str,
    name: str,
    group: str,
    env: Mapping[str, str] | None = None,
    *,
    wait_ready: bool = True,
) -> ManagedProcess:
    """A generation worker as a real process; ready once it has joined and been assigned (with
    ``wait_ready=False``, returned at once: for a worker expected to die early)."""
    from infra.process import free_port

    port = int((env or {}).get("TOKENLOG_WORKER_HTTP_PORT") or free_port())
    return services.start(
        name,
        [sys.executable, "-m", "pipeline", "worker"],
        env={
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOKENLOG_WORKER_GROUP": group,
            "TOKENLOG_WORKER_ID": name,
            "TOKENLOG_WORKER_HTTP_PORT": str(port),
            "TOKENLOG_WORKER_SESSION_TIMEOUT_MS": "6000",
            "TOKENLOG_WORKER_HEARTBEAT_MS": "1000",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        },
        ready=http_ok(f"http://127.0.0.1:{port}/readyz") if wait_ready else None,
        timeout_s=60,
    )


def same_partition_ids(prefix: str, count: int, partitions: int) -> tuple[list[str], int]:
    """``count`` conversation ids that the default partitioner puts in one partition."""
    from aiokafka.partitioner import DefaultPartitioner

    from tests.harness import unique

    by_partition: dict[int, list[str]] = {}
    all_partitions = list(range(partitions))
    while True:
        cid = unique(prefix)
        p = DefaultPartitioner()(cid.encode(), all_partitions, all_partitions)
        by_partition.setdefault(p, []).append(cid)
        if len(by_partition[p]) == count:
            return by_partition[p], p


def start_sessions(
    services: ServiceRunner,
    bootstrap: str,
    name: str,
    app_id: str,
    *,
    data_dir: str,
    env: Mapping[str, str] | None = None,
    port: int = 0,
) -> tuple[ManagedProcess, str]:
    """The session-state app as a real process; (process, base URL), ready once recovered."""
    from infra.process import free_port

    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    proc = services.start(
        name,
        [sys.executable, "-m", "pipeline", "sessions"],
        env={
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOKENLOG_SESSIONS_APP_ID": app_id,
            "TOKENLOG_SESSIONS_PORT": str(port),
            "TOKENLOG_SESSIONS_DATA_DIR": data_dir,
            "TOKENLOG_SESSIONS_SESSION_TIMEOUT_S": "6",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        },
        ready=http_ok(f"{url}/readyz", SERVICE_HEADERS),
        timeout_s=90,
    )
    return proc, url


async def caught_up(bootstrap: str, url: str, cid: str, timeout_s: float = 180.0) -> None:
    """Wait until the session app at ``url`` has applied every tokens record written so far in the
    partition of ``cid`` (not yet in the log). A new app reads the topic from its beginning: in the
    full suite that is every earlier test's answers, and a test that needs the app to keep pace
    with an answer as it is written waits for this first."""
    import httpx

    from schemas.cursor import Cursor, parse

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    last: Any = None
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def applied_to_the_end() -> bool:
                nonlocal last
                response = await client.get(f"{url}/sessions/{cid}", headers=SERVICE_HEADERS)
                last = (response.status_code, response.text[:300])
                if response.status_code != 404:
                    return False
                body = response.json()
                tp = TopicPartition(TOKENS_TOPIC, body["partition"])
                end: int = (await consumer.end_offsets([tp]))[tp]
                cursor = parse(body["cursor"]) if body["cursor"] else None
                applied = cursor.last_offset if isinstance(cursor, Cursor) else -1
                return applied >= end - 1

            await wait_for(applied_to_the_end, timeout_s=timeout_s, interval_s=0.1)
    except TimeoutError as exc:
        raise TimeoutError(f"the session app did not catch up with {cid}'s partition; last: {last}") from exc
    finally:
        await consumer.stop()


def get_snapshot(url: str, cid: str) -> tuple[int, Any]:
    import httpx

    response = httpx.get(f"{url}/sessions/{cid}", headers=SERVICE_HEADERS, timeout=10)
    return response.status_code, response.json()


async def snapshot_at(url: str, cid: str, offset: int, timeout_s: float = 60.0) -> Any:
    """Poll the snapshot until its cursor reaches ``offset``."""
    import httpx

    from schemas.cursor import Cursor, parse

    async with httpx.AsyncClient(timeout=10) as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: Any = None
        status: Any = None
        while loop.time() < deadline:
            response = await client.get(f"{url}/sessions/{cid}", headers=SERVICE_HEADERS)
            status = (response.status_code, response.text[:300])
            if response.status_code == 200:
                last = response.json()
                cursor = parse(last["cursor"])
                assert isinstance(cursor, Cursor)
                if cursor.last_offset >= offset:
                    return last
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"snapshot of {cid} did not reach offset {offset}; last: {last}; last answer: {status}"
        )


def turns_from_log(transcript: Transcript) -> list[tuple[str, str, str]]:
    """(prompt_id, status, answer text) of every finished answer, in log order of their start."""
    return [
        (a.started.prompt_id, a.status.value, a.text)
        for a in transcript.answers.values()
        if a.started is not None and a.finished
    ]
