"""The fault proxy forwards bytes both ways and obeys each fault (loopback echo server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.chaos.proxy import FaultProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with FaultProxy("127.0.0.1", port) as p:
        yield p
    server.close()


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def roundtrip(
    r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes, within_s: float = 10
) -> bytes:
    w.write(data)
    await w.drain()
    return await asyncio.wait_for(r.readexactly(len(data)), within_s)


async def nothing_comes_back(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes) -> None:
    w.write(data)
    await w.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r.readexactly(len(data)), 0.3)


async def test_bytes_go_both_ways(proxy: FaultProxy) -> None:
    r, w = await connect(proxy)
    assert await roundtrip(r, w, b"hello" * 1000) == b"hello" * 1000
    assert proxy.open_links == 1
    w.close()


async def test_cut_closes_open_connections_and_new_ones_still_work(proxy: FaultProxy) -> None:
    r, w = await connect(proxy)
    await roundtrip(r, w, b"x")
    assert proxy.cut() == 1
    assert await asyncio.wait_for(r.read(), 10) == b""  # closed under the client
    w.close()
    r2, w2 = await connect(proxy)
    assert await roundtrip(r2, w2, b"again") == b"again"
    w2.close()


async def test_stall_holds_bytes_until_released_and_blackhole_discards_them(proxy: FaultProxy) -> None:
    r, w = await connect(proxy)
    await roundtrip(r, w, b"warm")
    proxy.stall(True)
    await nothing_comes_back(r, w, b"held")
    proxy.stall(False)
    assert await asyncio.wait_for(r.readexactly(4), 10) == b"held"
    proxy.blackhole(True)
    await nothing_comes_back(r, w, b"gone")
    proxy.blackhole(False)
    assert await roundtrip(r, w, b"back") == b"back"
    w.close()


async def test_delay_and_throttle_slow_the_bytes_down(proxy: FaultProxy) -> None:
    r, w = await connect(proxy)
    proxy.delay(0.2)
    began = time.monotonic()
    await roundtrip(r, w, b"slow")
    assert time.monotonic() - began >= 0.4  # delayed each way
    proxy.delay(0)
    proxy.throttle(100_000)
    began = time.monotonic()
    await roundtrip(r, w, b"z" * 20_000, within_s=30)
    assert time.monotonic() - began >= 0.3  # 20 kB each way at 100 kB/s
    w.close()


def _tagged(tag: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """An echo server that prefixes every reply with ``tag``: tells two servers apart."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(tag + data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    return handle


async def test_refuse_closes_new_connections(proxy: FaultProxy) -> None:
    proxy.refuse(True)
    r, w = await connect(proxy)
    assert await asyncio.wait_for(r.read(), 10) == b""
    w.close()
    proxy.refuse(False)
    r, w = await connect(proxy)
    assert await roundtrip(r, w, b"open again") == b"open again"
    w.close()


async def line(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes) -> bytes:
    """Send ``data`` and a newline; the reply up to its newline (whichever server answers)."""
    w.write(data + b"\n")
    await w.drain()
    return await asyncio.wait_for(r.readuntil(b"\n"), 10)


async def test_retarget_sends_new_connections_to_the_other_server_and_leaves_open_ones() -> None:
    first = await asyncio.start_server(_tagged(b"first:"), "127.0.0.1", 0)
    second = await asyncio.start_server(_tagged(b"second:"), "127.0.0.1", 0)
    async with FaultProxy("127.0.0.1", first.sockets[0].getsockname()[1]) as proxy:
        r_old, w_old = await connect(proxy)
        assert await line(r_old, w_old, b"a") == b"first:a\n"
        proxy.retarget("127.0.0.1", second.sockets[0].getsockname()[1])
        r, w = await connect(proxy)
        assert await line(r, w, b"b") == b"second:b\n"
        # The link opened before the retarget still reaches the first server.
        assert await line(r_old, w_old, b"c") == b"first:c\n"
        w.close()
        w_old.close()
    first.close()
    second.close()
