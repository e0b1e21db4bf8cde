"""The snapshot never trails the stream: fetched the moment a client has an answer's
``response.completed``, ``GET /v1/conversations/{cid}`` and a new device's ``snapshot`` frame hold
that answer as the client streamed it (real broker, worker, session app and gateway processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.client import Client, ClientError
from gateway.service import SNAPSHOT_REUSE_S
from tests.gateway.stack import GatewayProc, Stack, events_of, folds_of
from tests.harness import SERVICE_HEADERS, unique, wait_for

pytestmark = pytest.mark.integration

CONVERSATIONS = 50
ANSWERS = 2
"""Answers per conversation: the first of a new conversation, the next once the snapshot the
gateway fetched for the first is too old to be reused (``SNAPSHOT_REUSE_S``), so it is fetched
from the session app anew, which may not have applied the answer's end yet."""
AT_ONCE = 10


def _opened(frame: dict[str, Any]) -> bool:
    return frame.get("type") in ("snapshot", "resync")


def _completed(response_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("type") == "response.completed" and f.get("response_id") == response_id


def _turn(conversation: dict[str, Any], response_id: str) -> tuple[str, str] | None:
    found = [t for t in conversation.get("turns") or () if t["response_id"] == response_id]
    return (found[-1]["status"], found[-1]["answer"]) if found else None


async def _one(stack: Stack, gw: GatewayProc, i: int) -> list[str]:
    """Answers streamed to a client; what the snapshots fetched at each one's end got wrong."""
    cid = unique("fold")
    wrong: list[str] = []
    async with Client(gw.url, stack.token(f"folder-{i}")) as client:
        follower = client.follow(cid, transport=("sse", "ws")[i % 2])
        await follower.once(until=_opened)  # subscribed before the prompt: every event is streamed
        for n in range(ANSWERS):
            accepted = await client.prompt(cid, f"Answer {i}.{n} [[tokens={10 + i % 30}]] [[rate=400]]")
            rid = accepted["response_id"]
            done = await follower.once(until=_completed(rid), timeout_s=60)
            assert done.ended == "until", f"answer {i}.{n} did not complete on the stream ({done.ended})"
            try:
                got = await client.snapshot(cid)  # the moment response.completed arrived
            except ClientError as exc:
                if exc.status != 404:  # a conversation the snapshot does not know yet: it trails
                    raise
                got = {}
            joined = client.follow(cid, transport=("ws", "sse")[i % 2])
            await joined.once(until=_opened)
            fetched = time.monotonic()
            streamed = folds_of(events_of(follower))[rid].text
            if _turn(got, rid) != ("completed", streamed):
                live = (got.get("live") or {}).get("answer")
                wrong.append(
                    f"GET, answer {i}.{n}: {_turn(got, rid)!r}, live {live!r}, streamed {streamed!r}"
                )
            frame = joined.received[-1]
            if _turn(frame["conversation"], rid) != ("completed", streamed):
                wrong.append(f"{frame['type']} frame, answer {i}.{n}: {_turn(frame['conversation'], rid)!r}")
            if n + 1 < ANSWERS:  # the next answer's snapshots are fetched anew, not these reused
                await wait_for(lambda at=fetched: time.monotonic() - at > SNAPSHOT_REUSE_S, 5, 0.05)
    return wrong


async def _all(stack: Stack, gw: GatewayProc) -> list[str]:
    limit = asyncio.Semaphore(AT_ONCE)

    async def bounded(i: int) -> list[str]:
        async with limit:
            return await _one(stack, gw, i)

    async with asyncio.timeout(300):
        results = await asyncio.gather(*(bounded(i) for i in range(CONVERSATIONS)))
    return [w for r in results for w in r]


def test_a_snapshot_fetched_as_an_answer_completes_holds_the_answer_as_it_was_streamed(
    stack: Stack, gw: GatewayProc
) -> None:
    before = gw.metric("tokenlog_gateway_snapshot_folds_total", outcome="folded")
    wrong = asyncio.run(_all(stack, gw))
    by_answer = [sum(f".{n}:" in w for w in wrong) for n in range(ANSWERS)]
    assert not wrong, (
        f"{len(wrong)} of {2 * ANSWERS * CONVERSATIONS} snapshots trailed the stream "
        f"(by answer of its conversation: {by_answer}):\n" + "\n".join(wrong[:10])
    )
    assert gw.metric("tokenlog_gateway_snapshot_folds_total", outcome="folded") > before


async def _cut_back(stack: Stack, gw: GatewayProc) -> tuple[tuple[str, str] | None, bool]:
    """A zombie's delta (seq 2) reaches the session app's snapshot; a CONTINUE takeover after seq 1
    then cuts it back. The takeover is read by the gateway while the snapshot it fetched before
    is reused: the turn it serves, and whether the reuse held (the fold met the cut-back)."""
    from aiokafka import AIOKafkaProducer

    from schemas.codec import TOKENS
    from schemas.records import ResponseCompleted, ResponseResumed, ResponseStarted, ResumeMode, TokenDelta
    from schemas.registry import TOKENS_TOPIC

    cid, user = unique("zombie"), unique("owner")
    rid = f"r-{cid}"
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=True)
    await producer.start()

    async def write(*events: Any) -> None:
        for event in events:
            await producer.send_and_wait(TOKENS_TOPIC, TOKENS.encode(event), key=cid.encode())

    try:
        now = int(time.time() * 1000)
        await write(
            ResponseStarted(cid, rid, "p-1", user, "q", "demo", now),
            *(TokenDelta(cid, rid, seq, text, now) for seq, text in enumerate(("a", "b", "STALE"))),
        )
        async with httpx.AsyncClient(timeout=10) as http:

            async def applied() -> bool:
                live = (
                    (await http.get(f"{stack.sessions_url}/sessions/{cid}", headers=SERVICE_HEADERS))
                    .json()
                    .get("live")
                )
                return bool(live and live["last_seq"] == 2)

            await wait_for(applied, 60, 0.05)
        async with Client(gw.url, stack.token(user)) as client:
            began = time.monotonic()
            first = await client.snapshot(cid)  # fetched from the session app, with the stale seq 2
            assert first["live"]["answer"] == "abSTALE"
            await write(
                ResponseResumed(cid, rid, 1, 1, ResumeMode.CONTINUE, now),
                TokenDelta(cid, rid, 2, "c", now, attempt=1),
                ResponseCompleted(cid, rid, 2, now, attempt=1),
            )
            follower = client.follow(cid, cursor=first["cursor"])  # the gateway has read them
            await follower.once(until=_completed(rid), timeout_s=30)
            second = await client.snapshot(cid)
            reused = time.monotonic() - began < SNAPSHOT_REUSE_S
        return _turn(second, rid), reused
    finally:
        await producer.stop()


def test_a_takeover_cutting_back_text_the_snapshot_had_is_served_from_the_log(
    stack: Stack, gw: GatewayProc
) -> None:
    for _ in range(3):  # the cut-back meets the fold only while the first snapshot is reused
        before = gw.metric("tokenlog_gateway_snapshot_folds_total", outcome="log")
        turn, reused = asyncio.run(_cut_back(stack, gw))
        assert turn == ("completed", "abc")
        if reused:
            assert gw.metric("tokenlog_gateway_snapshot_folds_total", outcome="log") > before
            return
    pytest.fail("the snapshot was never reused within SNAPSHOT_REUSE_S (the machine is too slow)")
