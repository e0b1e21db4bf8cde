"""Wire encoding, sans I/O: token events as JSON frames, SSE framing, and the WebSocket client
frames parsed and validated. Nothing here touches a socket.

Server frames are JSON objects with a ``type``; every frame that is an event carries its
``cursor`` (for SSE it is also the ``id:``):

- ``snapshot``: ``{"type":"snapshot","cursor":...,"conversation":{...snapshot...}}``;
- ``resync``: ``{"type":"resync","reason":...,"message":...,"cursor":...,"conversation":{...}}``,
  sent instead of events a cursor could not resume (the client replaces its state with the
  snapshot and continues from its cursor);
- events: ``response.started``, ``token``, ``response.completed``, ``response.failed``,
  ``response.cancelled``, ``response.resumed``: the event's fields (``schemas.records``) plus
  ``type`` and ``cursor``. Clients apply the reader rule of ``schemas/answers.py``.
- ``heartbeat``: ``{"type":"heartbeat","heartbeat_s":...}`` after every ``heartbeat_s`` of
  idleness (SSE: also first, as ``event: heartbeat`` with no ``id:``, so it moves no cursor); a
  client that hears nothing (of any kind) for longer than its liveness time (``liveness_s``)
  treats the link as dead and resumes from its cursor;
- WebSocket only: ``subscribed`` (with ``heartbeat_s``), ``ack``, ``pong``, ``error``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.errors import InvalidFrame, PayloadTooLarge
from gateway.models import CancelBody, PromptBody
from schemas.records import (
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    TokenDelta,
    TokenEvent,
)

EVENT_TYPES: dict[type[Any], str] = {
    ResponseStarted: "response.started",
    TokenDelta: "token",
    ResponseCompleted: "response.completed",
    ResponseFailed: "response.failed",
    ResponseCancelled: "response.cancelled",
    ResponseResumed: "response.resumed",
}


def event_json(event: TokenEvent, cursor: str) -> bytes:
    """The JSON frame of one event: its fields plus ``type`` and ``cursor`` (encoded once, shared
    by every connection that follows the conversation)."""
    body = orjson.dumps({name: getattr(event, name) for name in _FRAME_FIELDS[type(event)]})
    head = b'{"type":"' + EVENT_TYPES[type(event)].encode() + b'","cursor":"' + cursor.encode() + b'",'
    return head + body[1:]


CHAIN_FIELDS = frozenset({"prev_hash", "hash"})
"""Left out of client frames: the hash chain is for audit from the log (``pipeline.replay``)."""
_FRAME_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if f.name not in CHAIN_FIELDS) for cls in EVENT_TYPES
}


def control_json(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields})


def heartbeat_json(heartbeat_s: float) -> bytes:
    """The frame a stream sends when it has been idle ``heartbeat_s`` (it carries the interval,
    so a client that joins without a ``subscribed`` frame, SSE's, learns it too)."""
    return control_json("heartbeat", heartbeat_s=heartbeat_s)


LIVENESS_MARGIN_S = 2.0
"""Added to twice the server's heartbeat interval: a client's default liveness time."""


def liveness_s(heartbeat_s: float) -> float:
    """How long a client waits for a frame (of any kind) before it treats the link as dead:
    two heartbeat intervals and a margin (one late heartbeat is not a dead link)."""
    return 2 * heartbeat_s + LIVENESS_MARGIN_S


# --------------------------------------------------------------------------- SSE


def sse_event(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE event. ``data`` is a single-line JSON document (orjson never writes a raw newline)."""
    if b"\n" in data or b"\r" in data:
        raise ValueError("SSE data must be one line")
    out = b""
    if event is not None:
        out += b"event: " + event.encode() + b"\n"
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("SSE id must not contain CR, LF or NUL")
        out += b"id: " + id.encode() + b"\n"
    return out + b"data: " + data + b"\n\n"


def sse_retry(ms: int) -> bytes:
    return b"retry: " + str(int(ms)).encode() + b"\n\n"


def sse_comment(text: str) -> bytes:
    return b": " + text.replace("\n", " ").replace("\r", " ").encode() + b"\n\n"


# --------------------------------------------------------------------------- WebSocket client frames

CLIENT_TYPES = ("subscribe", "prompt", "cancel", "ping")


def parse_client_frame(data: str | bytes, *, max_bytes: int) -> dict[str, Any]:
    """A client frame as a validated dict with ``type``; ``InvalidFrame`` on anything else.

    - ``{"type":"subscribe","cursor":"..."|null}``
    - ``{"type":"prompt", ...PromptBody...}``, ``{"type":"cancel", ...CancelBody...}``
    - ``{"type":"ping","id":...}``
    An optional ``"ref"`` (string, ≤ 64 chars) is echoed in the reply."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"frame over {max_bytes} bytes")
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidFrame(f"not JSON: {exc}") from exc
    if not isinstance(frame, dict) or frame.get("type") not in CLIENT_TYPES:
        raise InvalidFrame(f"a frame is a JSON object with type one of {', '.join(CLIENT_TYPES)}")
    ref = frame.pop("ref", None)
    if ref is not None and (not isinstance(ref, str) or len(ref) > 64):
        raise InvalidFrame("ref must be a string of at most 64 characters")
    kind = frame.pop("type")
    out: dict[str, Any] = {"type": kind, "ref": ref}
    try:
        if kind == "subscribe":
            cursor = frame.pop("cursor", None)
            if frame:
                raise InvalidFrame(f"unknown fields in subscribe: {sorted(frame)}")
            if cursor is not None and not isinstance(cursor, str):
                raise InvalidFrame("cursor must be a string or null")
            out["cursor"] = cursor
        elif kind == "prompt":
            out["body"] = PromptBody.model_validate(frame)
        elif kind == "cancel":
            out["body"] = CancelBody.model_validate(frame)
        else:
            ping_id = frame.pop("id", None)
            if frame or not (ping_id is None or isinstance(ping_id, str | int)):
                raise InvalidFrame("ping carries at most an id")
            out["id"] = ping_id
    except ValidationError as exc:
        raise InvalidFrame(f"invalid {kind} frame: {_first_error(exc)}") from exc
    return out


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err.get("loc", ())) or "frame"
    return f"{where}: {err.get('msg', 'invalid')}"


# --------------------------------------------------------------------------- client side

_CLASSES: dict[str, type[Any]] = {name: cls for cls, name in EVENT_TYPES.items()}


def record_of(frame: dict[str, Any]) -> TokenEvent:
    """The token event a server frame carries (clients fold it with ``schemas.answers``)."""
    from schemas.records import from_avro

    cls = _CLASSES[frame["type"]]
    values = {k: v for k, v in frame.items() if k not in ("type", "cursor", "conversation_id")}
    record = from_avro({"conversation_id": frame["conversation_id"], "payload": (cls.AVRO_NAME, values)})
    assert isinstance(record, cls)
    return record  # type: ignore[no-any-return]


def is_event(frame: dict[str, Any]) -> bool:
    return frame.get("type") in _CLASSES


class SSEDecoder:
    """Server-Sent Events parsing as the HTML standard describes it, without I/O: feed bytes,
    get ``(event, id, data)`` for every dispatched event (comments and ``retry`` are consumed)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str | None, str]]:
        self._buffer += chunk
        out: list[tuple[str, str | None, str]] = []
        while True:
            cut = min((i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                return out
            line = self._buffer[:cut].decode("utf-8", errors="replace")
            skip = 2 if self._buffer[cut : cut + 2] == b"\r\n" else 1
            self._buffer = self._buffer[cut + skip :]
            if line == "":
                if self._data:
                    if self._id is not None:
                        self.last_event_id = self._id
                    out.append((self._event or "message", self.last_event_id, "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)
            elif name == "id" and "\0" not in value:
                self._id = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)
