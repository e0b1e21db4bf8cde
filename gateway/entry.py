"""One event of ``conversation.tokens`` as the gateway holds it: decoded once, encoded once."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.wire import EVENT_TYPES, event_json, sse_event
from schemas.codec import TOKENS
from schemas.cursor import Cursor
from schemas.errors import DecodeError
from schemas.records import TokenEvent


@dataclass(slots=True)
class Entry:
    offset: int
    event: TokenEvent
    cursor: str
    json: bytes
    """The JSON frame (fields, ``type``, ``cursor``), shared by every connection."""
    _sse: bytes | None = None

    @property
    def sse(self) -> bytes:
        """The SSE form, built the first time an SSE client needs it."""
        if self._sse is None:
            self._sse = sse_event(self.json, event=EVENT_TYPES[type(self.event)], id=self.cursor)
        return self._sse


def entry_of(event: TokenEvent, *, epoch: str, partition: int, offset: int) -> Entry:
    cursor = Cursor(epoch, partition, offset).format()
    return Entry(offset, event, cursor, event_json(event, cursor))


def make_entry(value: bytes | None, *, epoch: str, partition: int, offset: int) -> Entry | None:
    """The entry of a record, or None for a record that is not a tokenlog event (skipped)."""
    try:
        event = TOKENS.decode(value, partition=partition, offset=offset)
    except DecodeError:
        return None
    return entry_of(event, epoch=epoch, partition=partition, offset=offset)
