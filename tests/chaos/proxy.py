"""A fault-injecting TCP proxy for tests: 127.0.0.1:port → a target, with faults on command.

No such tool is installable here, so this is a small asyncio one. Every accepted connection gets
two pumps (client → target, target → client) that read a chunk and then obey the faults in force:

- ``cut()``: close every open connection at once (both sides); new ones are still accepted;
- ``refuse(True)``: close new connections as soon as they are accepted;
- ``stall(True)``: hold every byte (connections stay open) until ``stall(False)``;
- ``blackhole(True)``: read and discard every byte: connections look alive and carry nothing
  (only a heartbeat or timeout notices);
- ``delay(seconds)``: add latency to every chunk;
- ``throttle(bytes_per_s)``: pace every connection to that rate (0: unlimited);
- ``retarget(host, port)``: new connections go elsewhere (a restarted server on a new port).

Loopback only: it listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class Faults:
    refuse: bool = False
    blackhole: bool = False
    delay_s: float = 0.0
    bytes_per_s: int = 0
    flowing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.flowing.set()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.faults = Faults()
        self._port = port
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.cuts = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ faults

    def retarget(self, host: str, port: int) -> None:
        self.target = (host, port)

    def cut(self) -> int:
        """Close every open connection; how many were cut."""
        links = tuple(self._links)
        for a, b in links:
            for writer in (a, b):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
        self._links.clear()
        self.cuts += len(links)
        return len(links)

    def refuse(self, on: bool) -> None:
        self.faults.refuse = on

    def stall(self, on: bool) -> None:
        if on:
            self.faults.flowing.clear()
        else:
            self.faults.flowing.set()

    def blackhole(self, on: bool) -> None:
        self.faults.blackhole = on

    def delay(self, seconds: float) -> None:
        self.faults.delay_s = seconds

    def throttle(self, bytes_per_s: int) -> None:
        self.faults.bytes_per_s = bytes_per_s

    def heal(self) -> None:
        """Every fault off (open connections stay as they are)."""
        self.refuse(False)
        self.stall(False)
        self.blackhole(False)
        self.delay(0)
        self.throttle(0)

    @property
    def open_links(self) -> int:
        return len(self._links)

    # ------------------------------------------------------------------ pumps

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.faults.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            self._links.discard(link)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        faults = self.faults
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                await faults.flowing.wait()
                if faults.blackhole:
                    continue
                if faults.delay_s:
                    await asyncio.sleep(faults.delay_s)
                if faults.bytes_per_s:
                    await asyncio.sleep(len(data) / faults.bytes_per_s)
                writer.write(data)
                await writer.drain()


class ProxyThread:
    """A ``FaultProxy`` on an event loop of its own thread, for a proxy that outlives the tests'
    own loops (between a long-running service and the broker). Faults are applied with ``run``."""

    def __init__(self, target_host: str, target_port: int, *, port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self.proxy = FaultProxy(target_host, target_port, port=port)

    def start(self) -> ProxyThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self

    def run(self, fault: Callable[[FaultProxy], object]) -> None:
        """``fault(proxy)`` on the proxy's loop (the faults are not thread-safe)."""

        async def apply() -> None:
            fault(self.proxy)

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
