"""Slow clients and graceful shutdown, against real processes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import struct
from typing import Any

import orjson
import pytest
import websockets

from bench.gateway import rss_kib
from gateway.client import Client
from infra.process import wait_until
from tests.gateway.stack import GatewayProc, Stack, assert_matches_log, offset_of
from tests.harness import unique, wait_for
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration

QUEUE = 1024  # a second of slack at 1,000 events/s for the follower that keeps up


def raw_subscribe(host: str, port: int, path: str, cursor: str) -> socket.socket:
    """A WebSocket handshake and a subscribe frame over a socket whose owner then stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = orjson.dumps({"type": "subscribe", "cursor": cursor})
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload)) + mask + masked)
    return sock


def raw_drain(sock: socket.socket) -> tuple[list[dict[str, Any]], int]:
    """Read every frame left on the socket: (text frames, the close code)."""
    data = b""
    sock.settimeout(5)  # the server closes the connection after its close frame
    with contextlib.suppress(TimeoutError, OSError):
        while chunk := sock.recv(1 << 16):
            data += chunk
    sock.close()
    frames, code, at = [], 0, 0
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = struct.unpack("!H", data[at : at + 2])[0], at + 2
        elif size == 127:
            size, at = struct.unpack("!Q", data[at : at + 8])[0], at + 8
        body, at = data[at : at + size], at + size
        if opcode == 1:
            frames.append(orjson.loads(body))
        elif opcode == 8:
            code = struct.unpack("!H", body[:2])[0]
            break
    return frames, code


def completed(response_id: str) -> Any:
    return lambda f: f.get("type") == "response.completed" and f.get("response_id") == response_id


async def _slow_client(stack: Stack, gw: GatewayProc) -> dict[str, Any]:
    cid = unique("conv")
    token = stack.token("alice")
    async with Client(gw.url, token) as client:
        fast = client.follow(cid, transport="ws")
        await fast.once(until=lambda f: f["type"] == "snapshot")
        start = offset_of(fast.cursor or "")
        # A client that stops reading: a raw socket with a tiny receive buffer that nobody reads.
        host, port = gw.url.removeprefix("http://").split(":")
        path = f"/v1/conversations/{cid}/ws?access_token={token}"
        sock = await asyncio.to_thread(raw_subscribe, host, int(port), path, fast.cursor or "")
        rss_before = rss_kib(gw.proc.pid or 0)
        accepted = await client.prompt(cid, "Flood [[tokens=4000]] [[rate=1000]]", prompt_id="p-1")
        lags = []

        async def sample() -> None:
            while True:
                lags.append(gw.metric("tokenlog_gateway_client_lag_frames"))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        conn = await fast.once(until=completed(accepted["response_id"]), timeout_s=120)
        await wait_for(
            lambda: gw.metric("tokenlog_gateway_slow_client_closes_total", transport="ws") >= 1, 60
        )
        rss_after = rss_kib(gw.proc.pid or 0)
        sampler.cancel()
        # The slow client reads what reached it, sees the "resume" close, and resumes from its cursor.
        frames, close_code = await asyncio.to_thread(raw_drain, sock)
        assert close_code == 4000
        resumed = client.follow(cid, transport="sse")
        resumed.received = [f for f in frames if f["type"] not in ("error", "subscribed")]
        resumed.cursor = next(f["cursor"] for f in reversed(frames) if "cursor" in f and f["type"] != "error")
        await resumed.once(until=completed(accepted["response_id"]), timeout_s=120)
    transcript = await read_transcript(stack.bootstrap, accepted["partition"], [cid], all_finished(["p-1"]))
    assert conn.ended == "until", "the fast client was never disconnected"
    assert len(fast.connections) == 2
    assert_matches_log(fast, transcript, after=start)
    assert_matches_log(resumed, transcript, after=start)
    return {"lags": lags, "rss_growth_kib": rss_after - rss_before, "slow_frames": len(frames)}


def test_a_slow_client_is_told_to_resume_memory_stays_bounded_and_others_are_unaffected(stack: Stack) -> None:
    gw = stack.start_gateway(
        "gateway-small-queue",
        # Small socket buffers, so a client that stops reading blocks the gateway's writes soon.
        {"TOKENLOG_GATEWAY_QUEUE_FRAMES": str(QUEUE), "TOKENLOG_GATEWAY_SEND_BUFFER_BYTES": "16384"},
    )
    seen = asyncio.run(_slow_client(stack, gw))
    assert max(seen["lags"]) <= QUEUE
    assert seen["rss_growth_kib"] < 64 * 1024, seen
    assert seen["slow_frames"] < 4000


async def _shutdown(stack: Stack, gw: GatewayProc) -> tuple[list[dict[str, Any]], int | None]:
    cid = unique("conv")
    token = stack.token("alice")
    async with Client(gw.url, token) as client:
        sse = client.follow(cid, transport="sse")
        ws_url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={token}"
        async with websockets.connect(ws_url) as ws:
            await ws.send(orjson.dumps({"type": "subscribe"}).decode())
            while orjson.loads(await ws.recv())["type"] != "snapshot":
                pass
            sse_task = asyncio.create_task(sse.once(timeout_s=30))
            await wait_for(lambda: gw.metric("tokenlog_gateway_connections", transport="sse") >= 1, 30)
            os.kill(gw.proc.pid or 0, signal.SIGTERM)
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed:
                pass
            code = ws.close_code
        await sse_task
    return sse.received, code


def test_graceful_shutdown_tells_every_client_to_resume_elsewhere(stack: Stack) -> None:
    gw = stack.start_gateway("gateway-stopping")
    sse_frames, ws_code = asyncio.run(_shutdown(stack, gw))
    assert ws_code == 1012
    assert sse_frames[-1]["type"] == "error"
    assert sse_frames[-1]["code"] == "going_away"
    assert sse_frames[-1]["action"] == "resume"
    wait_until(lambda: not gw.proc.running(), 15, what="the gateway to exit")
    # uvicorn re-raises the signal once its shutdown is complete: exit by SIGTERM, not SIGKILL.
    assert gw.proc.exit_code() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in gw.proc.log_path.read_text()
