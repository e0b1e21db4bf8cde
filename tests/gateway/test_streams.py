"""Streams against the real broker, worker, session app and gateway processes."""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

import httpx
import pytest

from gateway.client import Client, Follower
from gateway.service import SNAPSHOT_REUSE_S
from infra.topics import describe
from schemas.registry import TOKENS_TOPIC
from tests.gateway.stack import GatewayProc, Stack, assert_matches_log, events_of, offset_of, until_all
from tests.harness import SERVICE_HEADERS, unique, wait_for
from tests.pipeline.helpers import all_finished, read_transcript, same_partition_ids

pytestmark = pytest.mark.integration


def opened(frame: dict[str, Any]) -> bool:
    """The frame that opens a stream without a usable cursor (WebSocket: after ``subscribed``)."""
    return frame.get("type") in ("snapshot", "resync")


def first_frame(follower: Follower, kind: str) -> dict[str, Any]:
    return next(f for f in follower.received if f["type"] == kind)


def completed(response_id: str) -> Any:
    return lambda f: (
        f.get("type") in ("response.completed", "response.failed") and f.get("response_id") == response_id
    )


async def _random_drops(stack: Stack, gw: GatewayProc, seed: int) -> None:
    rng = random.Random(seed)
    cid = unique("conv")
    async with Client(gw.url, stack.token("alice")) as client:
        followers = [client.follow(cid, transport=t) for t in ("sse", "sse", "ws", "ws")]
        for f in followers:  # each subscribes (snapshot of a new conversation) before the prompts
            await f.once(until=opened)
        start = offset_of(first_frame(followers[0], "snapshot")["cursor"])
        first = await client.prompt(cid, "First [[tokens=60]] [[rate=40]]", prompt_id="p-1")
        last = await client.prompt(cid, "Second [[tokens=60]] [[rate=40]]", prompt_id="p-2")
        await until_all(followers, completed(last["response_id"]), rng)
    transcript = await read_transcript(
        stack.bootstrap, first["partition"], [cid], all_finished(["p-1", "p-2"]), start=start + 1
    )
    for f in followers:
        assert len(f.connections) > 3, "the test should have dropped every client several times"
        assert_matches_log(f, transcript, after=start)


def test_sse_and_ws_clients_dropping_at_random_points_end_with_the_logs_events_exactly_once(
    stack: Stack, gw: GatewayProc
) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    asyncio.run(_random_drops(stack, gw, seed))
    assert gw.metric("tokenlog_gateway_resumes_total", path="memory") > 0


async def _join_mid_answer(stack: Stack, gw: GatewayProc, *, expect_sessions: bool) -> None:
    cid = unique("conv")
    async with Client(gw.url, stack.token("alice")) as client:
        first = client.follow(cid, transport="ws")
        await first.once(until=opened)
        first_opened = time.monotonic()
        start = offset_of(first_frame(first, "snapshot")["cursor"])
        # Long enough for any lag of the session app; the phone stops it once it has joined.
        accepted = await client.prompt(cid, "Long [[tokens=20000]] [[rate=200]]", prompt_id="p-1")
        await first.once(until=lambda f: f.get("type") == "token" and f["seq"] >= 40)
        if expect_sessions:  # wait until the session app holds part of the answer (it may trail)
            async with httpx.AsyncClient(timeout=10) as http:

                async def holds_part() -> bool:
                    answer = (
                        await http.get(f"{stack.sessions_url}/sessions/{cid}", headers=SERVICE_HEADERS)
                    ).json()
                    return bool(answer.get("live") and answer["live"]["last_seq"] >= 5)

                await wait_for(holds_part, 60, 0.1)
            # A snapshot fetched within SNAPSHOT_REUSE_S serves the next open of the conversation:
            # the phone must fetch its own, not reuse the first device's (of a new conversation).
            await wait_for(lambda: time.monotonic() - first_opened > SNAPSHOT_REUSE_S, 5, 0.05)
        # A second device with no cursor: snapshot (the partial answer), then live; it stops the answer.
        phone = client.follow(cid, transport="sse")
        await phone.once(until=lambda f: f.get("type") == "token", timeout_s=60)
        await client.cancel(cid, response_id=accepted["response_id"])
        ended = lambda f: f.get("type") == "response.cancelled"  # noqa: E731
        await phone.once(until=ended, timeout_s=60)
        await first.once(until=ended, timeout_s=60)
    transcript = await read_transcript(stack.bootstrap, accepted["partition"], [cid], all_finished(["p-1"]))
    snapshot = phone.received[0]
    assert snapshot["type"] == "snapshot"
    after = offset_of(snapshot["cursor"])
    live = snapshot["conversation"]["live"] or {"answer": "", "last_seq": -1}
    deltas = [f for f in events_of(phone) if f["type"] == "token"]
    assert deltas, "the phone joined before the answer ended and got it live"
    assert deltas[0]["seq"] == live["last_seq"] + 1, "no gap and no repeat at the splice"
    text = live["answer"] + "".join(d["text"] for d in deltas)
    assert text == transcript.by_prompt()["p-1"].text
    assert [offset_of(f["cursor"]) for f in events_of(phone)] == [
        o for o, _ in transcript.events if o > after
    ]
    assert_matches_log(first, transcript, after=start)


def test_a_device_joining_mid_answer_gets_the_snapshot_then_live_with_no_gap_or_repeat(
    stack: Stack, gw: GatewayProc
) -> None:
    before = gw.metric("tokenlog_gateway_resumes_total", path="snapshot")
    asyncio.run(_join_mid_answer(stack, gw, expect_sessions=True))
    assert gw.metric("tokenlog_gateway_resumes_total", path="snapshot") > before, (
        "hydrated by the session app"
    )


def test_without_the_session_app_a_new_device_is_hydrated_from_the_log(stack: Stack) -> None:
    lone = stack.start_gateway("gateway-no-sessions", {"TOKENLOG_GATEWAY_SESSIONS_URL": "http://127.0.0.1:9"})
    asyncio.run(_join_mid_answer(stack, lone, expect_sessions=False))
    assert lone.metric("tokenlog_gateway_resumes_total", path="log") >= 1


async def _seek_resume(stack: Stack, gw: GatewayProc) -> list[str]:
    cid = unique("conv")
    paths = []
    async with Client(gw.url, stack.token("alice")) as client:
        follower = client.follow(cid, transport="ws")
        await follower.once(until=opened)
        start = offset_of(first_frame(follower, "snapshot")["cursor"])
        accepted = await client.prompt(cid, "Old cursor [[tokens=120]] [[rate=0]]", prompt_id="p-1")
        await follower.once(max_frames=5)  # subscribed + 3 events, then gone
        transcript = await read_transcript(
            stack.bootstrap, accepted["partition"], [cid], all_finished(["p-1"])
        )
        # The window holds 8 events; the client missed over 100: the seek path serves it.
        await follower.once(until=completed(accepted["response_id"]))
        paths = [f["path"] for f in follower.received if f["type"] == "subscribed"]
    assert_matches_log(follower, transcript, after=start)
    return paths


def test_a_cursor_older_than_the_memory_window_resumes_through_the_seek_path(stack: Stack) -> None:
    small = stack.start_gateway("gateway-small-window", {"TOKENLOG_GATEWAY_WINDOW_EVENTS": "8"})
    paths = asyncio.run(_seek_resume(stack, small))
    assert paths[-1] == "seek"
    assert small.metric("tokenlog_gateway_resumes_total", path="seek") >= 1


async def _bad_cursors(stack: Stack, gw: GatewayProc) -> None:
    cid = unique("conv")
    async with Client(gw.url, stack.token("alice")) as client:
        accepted = await client.prompt(cid, "Hello [[tokens=5]] [[rate=0]]", prompt_id="p-1")
        partition = accepted["partition"]
        # Another epoch: resync with the reason and a fresh snapshot, then live.
        for transport in ("sse", "ws"):
            stale = client.follow(cid, transport=transport, cursor=f"1.someotherepoch.{partition}.3")
            await stale.once(until=opened)
            resync = first_frame(stale, "resync")
            assert resync["reason"] == "epoch_changed"
            assert resync["conversation"]["conversation_id"] == cid
        epoch = resync["cursor"].split(".")[1]
        partitions = (await describe(stack.bootstrap, [TOKENS_TOPIC]))[TOKENS_TOPIC].partitions
        other = client.follow(cid, transport="sse", cursor=f"1.{epoch}.{(partition + 1) % partitions}.3")
        await other.once(until=opened)
        assert first_frame(other, "resync")["reason"] == "wrong_partition"
        ahead = client.follow(cid, transport="ws", cursor=f"1.{epoch}.{partition}.999999999")
        await ahead.once(until=opened)
        assert first_frame(ahead, "resync")["reason"] == "unknown_position"
        # Malformed: 400 with the JSON error shape, no stream.
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"{gw.url}/v1/conversations/{cid}/events",
                params={"cursor": "1.x.y.z", "access_token": stack.token("alice")},
            )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_cursor"
        assert set(response.json()["error"]) >= {"code", "message", "action"}


def test_cursors_that_cannot_resume_get_resync_and_a_malformed_one_400(stack: Stack, gw: GatewayProc) -> None:
    asyncio.run(_bad_cursors(stack, gw))
    assert gw.metric("tokenlog_gateway_resumes_total", path="resync") >= 4


async def _failover(stack: Stack, gw_a: GatewayProc, gw_b: GatewayProc) -> None:
    cid = unique("conv")
    token = stack.token("alice")
    async with Client(gw_a.url, token) as a, Client(gw_b.url, token) as b:
        on_a = a.follow(cid, transport="sse")
        await on_a.once(until=opened)
        start = offset_of(first_frame(on_a, "snapshot")["cursor"])
        accepted = await a.prompt(cid, "Failover [[tokens=200]] [[rate=100]]", prompt_id="p-1")
        killed = asyncio.Event()

        def kill_after_30(frame: dict[str, Any]) -> bool:
            if frame.get("type") == "token" and frame["seq"] == 30 and not killed.is_set():
                gw_a.proc.kill()
                killed.set()
            return False

        conn = await on_a.once(until=kill_after_30, timeout_s=60)
        assert killed.is_set()
        assert conn.ended in ("eof", "broken"), conn.ended
        # The same follower, its cursor, another gateway.
        on_b = b.follow(cid, transport="ws", cursor=on_a.cursor)
        on_b.received = list(on_a.received)
        await on_b.once(until=completed(accepted["response_id"]), timeout_s=60)
    transcript = await read_transcript(stack.bootstrap, accepted["partition"], [cid], all_finished(["p-1"]))
    assert_matches_log(on_b, transcript, after=start)


def test_a_gateway_killed_mid_answer_the_client_resumes_exactly_on_another_gateway(
    stack: Stack, gw2: GatewayProc
) -> None:
    doomed = stack.start_gateway("gateway-doomed")
    asyncio.run(_failover(stack, doomed, gw2))


async def _filler(bootstrap: str, key: str, count: int) -> None:
    """``count`` records of another conversation (not tokenlog events: the readers skip them)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send("conversation.tokens", b"filler", key=key.encode()) for _ in range(count)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _indexed_from(gw: GatewayProc, partition: int) -> int | None:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    found = re.search(
        rf'^tokenlog_gateway_indexed_from{{partition="{partition}"}} (\S+)$', text, re.MULTILINE
    )
    return int(float(found.group(1))) if found else None


async def _from_the_beginning(stack: Stack, gw: GatewayProc) -> None:
    (filler, cid), partition = same_partition_ids("conv", 2, 12)
    await _filler(stack.bootstrap, filler, 700)  # more than a targeted read reads through (512)
    async with Client(gw.url, stack.token("alice")) as client:
        accepted = await client.prompt(cid, "Old [[tokens=20]] [[rate=0]]", prompt_id="p-1")
    assert accepted["partition"] == partition
    transcript = await read_transcript(stack.bootstrap, partition, [cid], all_finished(["p-1"]))
    first, last = transcript.events[0][0], transcript.events[-1][0]
    late = stack.start_gateway("gateway-late")  # its tail reader starts after the whole answer

    def indexed() -> bool:
        since = _indexed_from(late, partition)
        return since is not None and since <= first

    await wait_for(indexed, timeout_s=60)
    read_before = late.metric("tokenlog_gateway_catchup_records_read")
    async with Client(late.url, stack.token("alice")) as client:
        for transport in ("ws", "sse"):
            follower = client.follow(cid, transport=transport, cursor="beginning")
            await follower.once(until=completed(accepted["response_id"]))
            assert_matches_log(follower, transcript)
    read = late.metric("tokenlog_gateway_catchup_records_read") - read_before
    assert 0 < read <= 2 * (last - first + 1), f"{read} records read: the resume scanned the partition"
    assert late.metric("tokenlog_gateway_resumes_total", path="seek") >= 2


def test_a_gateway_started_after_an_answer_resumes_it_from_the_beginning_reading_only_its_records(
    stack: Stack, gw: GatewayProc
) -> None:
    """The backfill indexes the log before the tail reader's start: without it, every such resume
    read the partition from its start (a reconnect storm after a gateway restart queued minutes)."""
    asyncio.run(_from_the_beginning(stack, gw))
