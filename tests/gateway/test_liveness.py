"""Heartbeats and dead links against the real gateway: an idle stream sends heartbeats on WebSocket
and SSE with the interval it announces, and the Python client behind a fault proxy whose TCP link
freezes mid-answer gives the connection up after its liveness time and resumes from its cursor,
ending with the log's events exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
import websockets

from gateway.client import Client
from gateway.wire import SSEDecoder, liveness_s
from tests.chaos.proxy import FaultProxy
from tests.gateway.stack import GatewayProc, Stack, assert_matches_log, offset_of
from tests.harness import unique, wait_for
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration

HEARTBEAT_S = 0.5
"""The gateway's heartbeat here: a liveness time of 3 s."""


@pytest.fixture(scope="module")
def beating(stack: Stack) -> GatewayProc:
    return stack.start_gateway("gateway-beating", env={"TOKENLOG_GATEWAY_HEARTBEAT_S": str(HEARTBEAT_S)})


async def _idle_streams(stack: Stack, gw: GatewayProc) -> None:
    cid, token = unique("conv"), stack.token("alice")
    ws_url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={token}"
    async with asyncio.timeout(30), websockets.connect(ws_url, compression=None) as ws:
        await ws.send('{"type":"subscribe","cursor":"now"}')
        frames = [orjson.loads(await ws.recv()) for _ in range(3)]
    assert frames[0]["type"] == "subscribed"
    assert frames[0]["heartbeat_s"] == HEARTBEAT_S
    assert frames[1:] == [{"type": "heartbeat", "heartbeat_s": HEARTBEAT_S}] * 2  # nothing else: idle

    events: list[tuple[str, str | None, Any]] = []
    decoder = SSEDecoder()
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "GET", f"{gw.url}/v1/conversations/{cid}/events", params={"access_token": token, "cursor": "now"}
        ) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            events += [(kind, id, orjson.loads(data)) for kind, id, data in decoder.feed(chunk)]
            if len(events) >= 3:
                break
    # The first before anything else; none moves the cursor (no id:).
    assert events[:3] == [("heartbeat", None, {"type": "heartbeat", "heartbeat_s": HEARTBEAT_S})] * 3


def test_an_idle_stream_sends_heartbeats_with_the_interval_it_announces(
    stack: Stack, beating: GatewayProc
) -> None:
    asyncio.run(_idle_streams(stack, beating))


async def _frozen_link(stack: Stack, gw: GatewayProc, transport: str) -> None:
    cid = unique("conv")
    port = int(gw.url.rsplit(":", 1)[1])
    async with FaultProxy("127.0.0.1", port) as proxy, Client(proxy.url, stack.token("alice")) as client:
        follower = client.follow(cid, transport=transport)
        await follower.once(until=lambda f: f.get("type") == "snapshot")
        start = offset_of(follower.received[-1]["cursor"])
        accepted = await client.prompt(cid, "Frozen [[tokens=200]] [[rate=40]]", prompt_id="p-1")

        async def freeze_then_heal() -> None:
            await wait_for(lambda: sum(f.get("type") == "token" for f in follower.received) >= 10)
            proxy.stall(True)  # every byte held, both ways; the connection stays open
            await wait_for(lambda: follower.connections[1].ended == "dead", timeout_s=60)
            proxy.heal()

        faults = asyncio.create_task(freeze_then_heal())
        async with asyncio.timeout(120):
            async for frame in follower.frames():
                if frame.get("type") == "response.completed":
                    break
        await faults
    assert follower.liveness_s == liveness_s(HEARTBEAT_S)
    assert follower.connections[1].ended == "dead"
    resumed = follower.connections[2:]
    assert resumed
    assert not any(f["type"] in ("snapshot", "resync") for c in resumed for f in c.frames)  # by cursor
    transcript = await read_transcript(
        stack.bootstrap, accepted["partition"], [cid], all_finished(["p-1"]), start=start + 1
    )
    assert_matches_log(follower, transcript, after=start)


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_a_frozen_link_is_given_up_and_the_answer_resumed_from_the_cursor(
    stack: Stack, beating: GatewayProc, transport: str
) -> None:
    asyncio.run(_frozen_link(stack, beating, transport))
