"""Runs the gateway under uvicorn with what a deploy needs: WebSocket without compression (memory
per idle connection), bounded frames, a graceful shutdown that first tells every client to resume
elsewhere, and logs that never carry a token."""

from __future__ import annotations

import logging
import re
import socket
from urllib.parse import unquote

import uvicorn

from gateway.app import create_app
from gateway.guard import protocols
from gateway.service import Gateway
from gateway.settings import GatewaySettings

_SECRETS = re.compile(r"(access_token=)[^&\s\"']+|(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
"""A JWT anywhere (every token is one), whatever the name it came under."""


def redact(message: str) -> str:
    """``message`` without bearer tokens. Matched on the decoded text: Starlette decodes a query
    before it reads ``access_token``, so ``access%5Ftoken=`` or ``%61ccess_token=`` carry a token
    as well (and the line is then logged decoded)."""
    decoded = message
    for _ in range(3):  # encoded once, twice, three times
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    if decoded != message and (_SECRETS.search(decoded) or _JWT.search(decoded)):
        message = decoded
    message = _SECRETS.sub(lambda m: (m.group(1) or m.group(2)) + "[redacted]", message)
    return _JWT.sub("[redacted]", message)


class RedactTokens(logging.Filter):
    """Replaces bearer tokens (query ``access_token`` however encoded, ``Authorization``, any JWT)
    in any log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redactor = RedactTokens()
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "gateway", "aiokafka"):
        logging.getLogger(name).addFilter(redactor)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every snapshot URL (ids) at INFO


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Before uvicorn waits for open streams: tell them to resume on another gateway.
        self.gateway.drain()
        await super().shutdown(sockets)


def listen(settings: GatewaySettings) -> socket.socket:
    """The listening socket; accepted connections inherit its send buffer size (Linux)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.send_buffer_bytes > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer_bytes)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def build(settings: GatewaySettings) -> GatewayServer:
    gateway = Gateway(settings)
    app = create_app(settings, gateway)
    http, ws = protocols(settings)  # header timeout and per-address cap (guard.py)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http,
        ws=ws,
        ws_per_message_deflate=False,
        ws_max_size=settings.max_ws_frame_bytes,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        access_log=False,  # query strings may carry access_token; the filter guards other lines
        log_config=None,
        lifespan="on",
        server_header=False,
    )
    return GatewayServer(config, gateway)


def main() -> None:
    configure_logging()
    settings = GatewaySettings.from_env()
    try:
        settings.check()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    server = build(settings)
    logging.getLogger(__name__).info(
        "gateway on http://%s:%d (development mode: %s)", settings.host, settings.port, settings.dev_mode
    )
    server.run(sockets=[listen(settings)])
