"""Audit replay against the whole running system: a scripted set of conversations (a completed
answer, a cancel, a failure and a worker failover) followed by clients through the gateway; the
replay from the log equals what the clients received and what the session snapshot holds; a
tampered copy is flagged event by event; as-of and time-range boundaries are exact."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gateway.client import Client, Follower
from pipeline.replay.source import ReplaySource, Selection
from pipeline.replay.transcript import Turn
from pipeline.replay.verify import Kind
from schemas.codec import PROMPTS, TOKENS
from schemas.records import PromptSubmitted, ResponseResumed, TokenDelta, TokenEvent
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC
from tests.gateway.stack import GatewayProc, Stack, events_of, folds_of, partition_of
from tests.harness import SERVICE_HEADERS, create_topic, unique, wait_for
from tests.pipeline.helpers import start_worker

pytestmark = pytest.mark.integration

TERMINAL = {"response.completed", "response.failed", "response.cancelled"}


@dataclass
class Scripted:
    plain: str
    """Conversation with a completed answer, a cancelled one and a failed one."""
    failover: str
    """Conversation whose answer was taken over after its worker was killed."""
    followers: dict[str, list[Follower]] = field(default_factory=dict)
    response_ids: dict[str, list[str]] = field(default_factory=dict)


async def _follow(followers: list[Follower], last_response: str, rng: random.Random) -> None:
    """Each follower reads short stretches with disconnects in between until the last answer ends."""

    def done(frame: dict[str, Any]) -> bool:
        return frame.get("type") in TERMINAL and frame.get("response_id") == last_response

    async def run(follower: Follower) -> None:
        for _ in range(2000):
            conn = await follower.once(max_frames=rng.randint(3, 40), until=done, timeout_s=120)
            if conn.ended == "until":
                return
        raise AssertionError("the conversation did not end within 2000 reconnects")

    await asyncio.gather(*(run(f) for f in followers))


async def _tokens_seen(follower: Follower, response_id: str, count: int) -> None:
    await follower.once(
        until=lambda f: f.get("type") == "token" and f["response_id"] == response_id and f["seq"] >= count,
        timeout_s=60,
    )


async def _script(stack: Stack, gw: GatewayProc, seed: int) -> Scripted:
    rng = random.Random(seed)
    plain, failover = unique("audit"), unique("audit")
    scripted = Scripted(plain, failover)
    async with Client(gw.url, stack.token("alice")) as client:
        for cid in (plain, failover):
            scripted.followers[cid] = [
                client.follow(cid, transport=t, cursor="beginning") for t in ("sse", "ws")
            ]
        watcher = client.follow(plain, transport="sse", cursor="now")

        # The plain conversation: completed, cancelled mid-answer, failed by the provider.
        first = await client.prompt(plain, "Plain [[tokens=30]] [[rate=200]]", prompt_id="p-1")
        second = await client.prompt(plain, "Cancel me [[tokens=600]] [[rate=40]]", prompt_id="p-2")
        await _tokens_seen(watcher, second["response_id"], 10)
        await client.cancel(plain, prompt_id="p-2")
        third = await client.prompt(
            plain, "Fail me [[tokens=40]] [[fail_after=12]] [[rate=200]]", prompt_id="p-3"
        )
        scripted.response_ids[plain] = [first["response_id"], second["response_id"], third["response_id"]]
        following = asyncio.create_task(_follow(scripted.followers[plain], third["response_id"], rng))

        # The failover conversation: the worker is killed mid-answer, a successor continues it.
        taken = await client.prompt(failover, "Fail over [[tokens=160]] [[rate=40]]", prompt_id="p-1")
        scripted.response_ids[failover] = [taken["response_id"]]
        await _tokens_seen(client.follow(failover, transport="sse", cursor="now"), taken["response_id"], 20)
        [worker] = [p for p in stack.runner.started if p.name == "worker"]
        worker.kill()
        start_worker(
            stack.runner,
            stack.bootstrap,
            "worker-successor",
            stack.worker_group,
            {"TOKENLOG_WORKER_COALESCE_MS": "0"},
        )
        await _follow(scripted.followers[failover], taken["response_id"], rng)
        await following
    return scripted


@pytest.fixture(scope="module")
def scripted(stack: Stack, gw: GatewayProc) -> Scripted:
    seed = random.randrange(1 << 30)
    print(f"audit script seed {seed}")
    return asyncio.run(_script(stack, gw, seed))


def _replay(
    stack: Stack, selection: Selection, tokens_topic: str = TOKENS_TOPIC, prompts_topic: str = PROMPTS_TOPIC
) -> tuple[list[Turn], list[Any]]:
    source = ReplaySource(stack.bootstrap, tokens_topic=tokens_topic, prompts_topic=prompts_topic)
    replay, _ = asyncio.run(source.replay(selection))
    return replay.turns(), replay.findings()


def _snapshot(stack: Stack, cid: str, response_ids: list[str]) -> dict[str, Any]:
    """The session app's snapshot once every answer in it has ended."""
    found: dict[str, Any] = {}

    def settled() -> bool:
        response = httpx.get(f"{stack.sessions_url}/sessions/{cid}", headers=SERVICE_HEADERS, timeout=10)
        if response.status_code != 200:
            return False
        found.update(response.json())
        turns = {t["response_id"]: t for t in found["turns"]}
        return found["live"] is None and all(rid in turns for rid in response_ids)

    asyncio.run(wait_for(settled, timeout_s=90, interval_s=0.2))
    return found


def test_replayed_conversations_equal_what_clients_received_and_the_session_snapshot(
    stack: Stack, scripted: Scripted
) -> None:
    for cid, response_ids in scripted.response_ids.items():
        turns, findings = _replay(stack, Selection(conversation=cid))
        assert findings == []
        assert [t.response_id for t in turns] == response_ids
        assert all(t.chain == "intact" for t in turns)
        by_response = {t.response_id: t for t in turns}
        for follower in scripted.followers[cid]:
            folds = folds_of(events_of(follower))
            assert {rid: (f.text, f.status.value) for rid, f in folds.items()} == {
                rid: (t.text, t.status) for rid, t in by_response.items()
            }, follower.transport
        snapshot = _snapshot(stack, cid, response_ids)
        for turn in snapshot["turns"]:
            replayed = by_response[turn["response_id"]]
            assert (turn["answer"], turn["status"], turn["model"]) == (
                replayed.text,
                replayed.status,
                replayed.model,
            )
            assert (turn["started_at"], turn["ended_at"]) == (replayed.started_at, replayed.ended_at)
            assert turn["attempt"] + 1 == replayed.attempts
            assert turn["first_token_at"] == (replayed.first_token_at or 0)
            assert (turn["completion_tokens"], turn["error_message"]) == (
                replayed.completion_tokens,
                replayed.error_message,
            )
            assert (turn["finish_reason"], turn["error_class"]) == (
                replayed.finish_reason,
                replayed.error_class,
            )

    plain = {t.prompt_id: t for t in _replay(stack, Selection(conversation=scripted.plain))[0]}
    assert [plain[p].status for p in ("p-1", "p-2", "p-3")] == ["completed", "cancelled", "failed"]
    assert plain["p-3"].error_class == "scripted_failure"
    assert plain["p-2"].cancelled_by == "alice"
    assert all(plain[p].submitted_at is not None and plain[p].ttft_ms is not None for p in plain)
    [taken] = _replay(stack, Selection(conversation=scripted.failover))[0]
    assert taken.attempts == 2  # the chain was continued across the takeover: "intact" above


async def _records(bootstrap: str, topic: str, partition: int, key: str) -> list[Any]:
    """Every record of ``key`` in one partition, with offsets and broker timestamps."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                found += [r for r in records if r.key == key.encode()]
        return found
    finally:
        await consumer.stop()


async def _copy(bootstrap: str, topic: str, values: list[bytes], key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:  # one at a time: offsets in the copy are the list's indexes
            await (await producer.send(topic, value, key=key.encode(), partition=0))
    finally:
        await producer.stop()


def test_a_tampered_copy_is_flagged_event_by_event_with_partition_and_offset(
    stack: Stack, scripted: Scripted
) -> None:
    cid = scripted.failover
    records = asyncio.run(_records(stack.bootstrap, "conversation.tokens", partition_of(cid), cid))
    events: list[TokenEvent] = [TOKENS.decode(r.value) for r in records]
    values = [r.value for r in records]
    r = next(i for i, e in enumerate(events) if isinstance(e, ResponseResumed))
    assert isinstance(events[3], TokenDelta)
    assert all(isinstance(e, TokenDelta) for e in events[r + 1 : r + 6])
    altered = TOKENS.encode(dataclasses.replace(events[3], text="something the user was never shown"))
    copy = [*values[:3], altered, *values[4:6], *values[7 : r + 3]]  # the delta at index 6 dropped
    swapped = len(copy)
    copy += [values[r + 4], values[r + 3]]  # two deltas of the successor swapped
    stale = len(copy)
    copy += [values[2], *values[r + 5 :]]  # a delta of the killed worker's attempt, again
    tokens_topic = asyncio.run(create_topic(stack.bootstrap, unique("scratch.tokens"), 1))
    prompts_topic = asyncio.run(create_topic(stack.bootstrap, unique("scratch.prompts"), 1))
    asyncio.run(_copy(stack.bootstrap, tokens_topic, copy, cid))

    _, untouched = _replay(stack, Selection(conversation=cid))
    assert untouched == []
    _, findings = _replay(
        stack, Selection(conversation=cid), tokens_topic=tokens_topic, prompts_topic=prompts_topic
    )
    assert [(f.kind, f.partition, f.offset) for f in findings] == [
        (Kind.ALTERED, 0, 3),
        (Kind.MISSING, 0, 6),
        (Kind.REORDERED, 0, swapped),
        (Kind.FENCED, 0, stale),
    ]
    assert "seq 5" in findings[1].detail

    cli = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", "--conversation", cid, "--verify",
         "--bootstrap", stack.bootstrap, "--tokens-topic", tokens_topic, "--prompts-topic", prompts_topic],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr
    for finding in findings:
        assert str(finding) in cli.stderr


def test_as_of_a_moment_mid_answer_returns_the_partial_answer_as_it_was_then(
    stack: Stack, scripted: Scripted
) -> None:
    cid = scripted.plain
    cancelled = scripted.response_ids[cid][1]
    records = asyncio.run(_records(stack.bootstrap, "conversation.tokens", partition_of(cid), cid))
    deltas = [
        (r, e)
        for r in records
        if isinstance(e := TOKENS.decode(r.value), TokenDelta) and e.response_id == cancelled
    ]
    # A delta appended in a later millisecond than the one before and the one after it.
    k = next(
        i for i in range(5, len(deltas) - 1)
        if deltas[i - 1][0].timestamp < deltas[i][0].timestamp < deltas[i + 1][0].timestamp
    )  # fmt: skip
    moment = deltas[k][0].timestamp
    turns, findings = _replay(stack, Selection(conversation=cid, as_of_ms=moment))
    assert findings == []
    by_prompt = {t.prompt_id: t for t in turns}
    assert set(by_prompt) == {"p-1", "p-2"}  # p-3 was asked later
    partial = by_prompt["p-2"]
    assert partial.status == "streaming"
    assert partial.text == "".join(e.text for _, e in deltas[: k + 1])
    assert partial.last_offset == deltas[k][0].offset  # the event at the moment is in, the next is not
    assert by_prompt["p-1"].status == "completed"


def test_a_time_range_takes_every_turn_asked_in_it_and_no_other(stack: Stack, scripted: Scripted) -> None:
    cid = scripted.plain
    records = asyncio.run(_records(stack.bootstrap, "conversation.prompts", partition_of(cid), cid))
    asked = {
        prompt.prompt_id: r.timestamp
        for r in records
        if isinstance(prompt := PROMPTS.decode(r.value), PromptSubmitted)
    }
    assert sorted(asked) == ["p-1", "p-2", "p-3"]
    t1, t2, t3 = asked["p-1"], asked["p-2"], asked["p-3"]

    def ours(since: int, until: int) -> dict[str, Turn]:
        turns, findings = _replay(stack, Selection(since_ms=since, until_ms=until))
        assert findings == []
        return {t.prompt_id: t for t in turns if t.conversation_id == cid}

    # At the boundaries, to the millisecond: since is inclusive, until exclusive.
    for since, until in [(t2, t3), (t2, t3 + 1), (t1, t3 + 1), (t1 + 1, t3 + 1), (t3, t3 + 1), (t1, t2)]:
        expected = {p for p, t in asked.items() if since <= t < until}
        assert set(ours(since, until)) == expected, (since, until, asked)
    whole = ours(t2, t2 + 1)
    assert whole["p-2"].status == "cancelled"  # read in full, past the end of the range
    assert whole["p-2"].text == _replay(stack, Selection(conversation=cid))[0][1].text


def test_replay_writes_jsonl_markdown_and_parquet(stack: Stack, scripted: Scripted, tmp_path: Path) -> None:
    cid = scripted.plain
    base = [sys.executable, "-m", "pipeline", "replay", "--conversation", cid, "--bootstrap", stack.bootstrap]
    lines = subprocess.run(base, capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    turns = [json.loads(line) for line in lines]
    assert [t["status"] for t in turns] == ["completed", "cancelled", "failed"]
    assert {"ttft_ms", "duration_ms", "usage", "model", "finish_reason"} <= set(turns[0])
    markdown = subprocess.run(
        [*base, "--format", "markdown"], capture_output=True, text=True, timeout=120, check=True
    )
    assert f"# Conversation `{cid}`" in markdown.stdout
    assert turns[0]["text"] in markdown.stdout
    subprocess.run(
        [*base, "--format", "parquet", "--out", str(tmp_path)], capture_output=True, timeout=120, check=True
    )
    table = pq.read_table(tmp_path / "turns.parquet")
    assert table.column("text").to_pylist() == [t["text"] for t in turns]
    answers = pq.read_table(tmp_path / "answers.parquet").to_pylist()
    assert [a["outcome"] for a in answers] == ["completed", "cancelled", "failed"]
    assert all(a["ttft_ms"] is not None and a["ttft_ms"] >= 0 for a in answers)
