"""The Python client's dead-link timer, against real local servers (WebSocket and SSE) that go
silent with the connection left open, as a link frozen between client and gateway looks: the
follower gives the connection up once nothing arrived within its liveness time and resumes from
its cursor; heartbeats alone keep a connection alive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from gateway.client import Client, Follower
from gateway.wire import heartbeat_json, liveness_s, sse_event

HEARTBEAT_S = 0.25
"""What the fake servers announce: a liveness time of 2.5 s."""

Script = Callable[["Peer"], Awaitable[None]]


class Peer:
    """One accepted connection of a fake server, as its script sees it."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], resumed_from: str | None) -> None:
        self._send = send
        self.resumed_from = resumed_from
        """The cursor the client resumed with (subscribe frame, Last-Event-ID)."""

    async def frame(self, kind: str, **fields: Any) -> None:
        await self._send(orjson.dumps({"type": kind, **fields}))

    async def heartbeat(self) -> None:
        await self._send(heartbeat_json(HEARTBEAT_S))


class FakeServer:
    """A loopback server whose n-th connection runs ``scripts[n]``; once a script returns the
    server stays silent and keeps the connection open until the client goes."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.peers: list[Peer] = []
        self.url = ""

    def _next(
        self, send: Callable[[bytes], Awaitable[None]], resumed_from: str | None
    ) -> tuple[Peer, Script]:
        peer = Peer(send, resumed_from)
        self.peers.append(peer)
        return peer, self.scripts[min(len(self.peers), len(self.scripts)) - 1]


@contextlib.asynccontextmanager
async def ws_server(scripts: list[Script]) -> AsyncIterator[FakeServer]:
    fake = FakeServer(scripts)

    async def handler(ws: ServerConnection) -> None:
        subscribe = orjson.loads(await ws.recv())

        async def send(data: bytes) -> None:
            await ws.send(data.decode())

        peer, script = fake._next(send, subscribe["cursor"])
        await peer.frame("subscribed", path="window", heartbeat_s=HEARTBEAT_S)
        await script(peer)
        await ws.wait_closed()  # silent from here on

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        fake.url = f"http://127.0.0.1:{port}"
        yield fake


@contextlib.asynccontextmanager
async def sse_server(scripts: list[Script]) -> AsyncIterator[FakeServer]:
    fake = FakeServer(scripts)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await respond(reader, writer)
        finally:
            writer.close()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")

        async def send(data: bytes) -> None:
            frame = orjson.loads(data)
            writer.write(sse_event(data, event=frame["type"], id=frame.get("cursor")))
            await writer.drain()

        peer, script = fake._next(send, headers.get("last-event-id"))
        await peer.heartbeat()  # as the gateway's stream starts: the interval first
        await script(peer)
        await reader.read()  # silent until the client closes

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        fake.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        yield fake


SERVERS = {"ws": ws_server, "sse": sse_server}


async def two_events_then_silence(peer: Peer) -> None:
    await peer.frame("token", cursor="c-1")
    await peer.frame("token", cursor="c-2")


async def the_rest(peer: Peer) -> None:
    await peer.frame("token", cursor="c-3")
    await peer.frame("response.completed", cursor="c-4")


async def follow_to_the_end(follower: Follower) -> list[str]:
    """Every cursor ``frames()`` yields, up to the completed answer (30 s at most)."""
    cursors: list[str] = []
    async with asyncio.timeout(30):
        async for frame in follower.frames():
            if "cursor" in frame and frame["type"] != "subscribed":
                cursors.append(frame["cursor"])
            if frame["type"] == "response.completed":
                return cursors
    raise AssertionError("frames() ended")


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_a_silent_connection_is_given_up_and_resumed_from_the_cursor(transport: str) -> None:
    scripts: list[Script] = [two_events_then_silence, the_rest]
    async with SERVERS[transport](scripts) as server, Client(server.url, "token") as client:
        follower = client.follow("c", transport=transport)
        cursors = await follow_to_the_end(follower)
    assert follower.heartbeat_s == HEARTBEAT_S
    assert follower.liveness_s == liveness_s(HEARTBEAT_S) == 2 * HEARTBEAT_S + 2
    assert follower.connections[0].ended == "dead"
    assert [peer.resumed_from for peer in server.peers] == [None, "c-2"]
    assert cursors == ["c-1", "c-2", "c-3", "c-4"]


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_heartbeats_alone_keep_a_connection_alive(transport: str) -> None:
    beats = round(1.6 * liveness_s(HEARTBEAT_S) / HEARTBEAT_S)  # well past one liveness time

    async def only_heartbeats(peer: Peer) -> None:
        for _ in range(beats):
            await asyncio.sleep(HEARTBEAT_S)  # the server's pace, not a wait for a condition
            await peer.heartbeat()
        await peer.frame("response.completed", cursor="c-1")

    async with SERVERS[transport]([only_heartbeats]) as server, Client(server.url, "token") as client:
        follower = client.follow("c", transport=transport)
        conn = await follower.once(until=lambda f: f["type"] == "response.completed", timeout_s=60)
    assert conn.ended == "until"
    assert len(server.peers) == 1
    assert conn.heartbeats >= beats  # SSE's opening heartbeat too
    assert all(frame["type"] != "heartbeat" for frame in follower.received)


async def test_a_handshake_that_never_answers_is_a_dead_link_too() -> None:
    """A link that accepts the TCP connection and never answers (frozen before the upgrade)."""
    accepted: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with Client(url, "token") as client:
            for transport in ("ws", "sse"):
                follower = client.follow("c", transport=transport, liveness_s=0.5)
                assert follower.liveness_s == 0.5  # overrides the interval a server would announce
                conn = await follower.once(timeout_s=30)
                assert conn.ended == "dead", transport
    assert len(accepted) == 2
    for writer in accepted:
        writer.close()
