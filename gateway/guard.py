"""Connection limits below the ASGI app, where a request that never completes is still visible
(slowloris): the request's headers must be complete within ``header_timeout_s`` of the
connection opening (or of the request beginning, on a kept-alive connection), else the
connection gets 408 and is closed; and each client address holds at most ``connections_per_ip``
open connections (streams and WebSockets included), the next one gets 429 and is closed.

Idle kept-alive connections are closed by uvicorn's own keep-alive timeout; a slow body by
``app.BodyLimit``; an idle WebSocket by its ping timeout and the subscribe deadline.

uvicorn takes protocol classes as settings (``http=``, ``ws=``): these are its httptools and
websockets-sansio protocols with the two checks added.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.errors import GatewayError, RequestTimeout, TooManyConnections
from gateway.settings import GatewaySettings

_REASONS = {408: b"Request Timeout", 429: b"Too Many Requests"}


@dataclass
class AddressCounts:
    """Open connections per client address (pure bookkeeping): ``admit`` refuses one over the cap;
    ``release`` is idempotent (a connection upgraded to a WebSocket is released by the protocol
    that ends up owning it)."""

    cap: int
    """0: no cap."""
    exempt: frozenset[str] = frozenset()
    _open: dict[str, set[object]] = field(default_factory=dict)
    _address: dict[object, str] = field(default_factory=dict)

    def admit(self, address: str, conn: object) -> bool:
        if self.cap <= 0 or address in self.exempt:
            return True
        held = self._open.setdefault(address, set())
        if len(held) >= self.cap:
            if not held:
                del self._open[address]
            return False
        held.add(conn)
        self._address[conn] = address
        return True

    def release(self, conn: object) -> None:
        address = self._address.pop(conn, None)
        if address is None:
            return
        held = self._open.get(address)
        if held is not None:
            held.discard(conn)
            if not held:
                del self._open[address]

    def holding(self, address: str) -> int:
        return len(self._open.get(address, ()))


def refusal(error: GatewayError) -> bytes:
    """A complete HTTP response carrying ``error`` that closes the connection."""
    body = orjson.dumps(error.body())
    reason = _REASONS.get(error.status, b"Error")
    head = b"HTTP/1.1 %d %s\r\n" % (error.status, reason)
    head += b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body)
    return head + b"\r\n" + body


def protocols(settings: GatewaySettings) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """The HTTP and WebSocket protocol classes for uvicorn, sharing one ``AddressCounts``."""
    counts = AddressCounts(settings.connections_per_ip, frozenset(settings.connection_cap_exempt))
    header_timeout_s = settings.header_timeout_s

    class GuardedHttp(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if not counts.admit(address, transport):
                self._refuse(TooManyConnections(f"at most {counts.cap} connections per address"))
                return
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            counts.release(self.transport)
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            self._refuse(
                RequestTimeout(f"the request's headers did not arrive within {header_timeout_s:g} s")
            )

        def _refuse(self, error: GatewayError) -> None:
            if not self.transport.is_closing():
                self.transport.write(refusal(error))
                self.transport.close()

    class GuardedWebSocket(WebSocketsSansIOProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            counts.release(self.transport)
            super().connection_lost(exc)

    return GuardedHttp, GuardedWebSocket
