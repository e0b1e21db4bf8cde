"""One event of ``conversation.tokens`` as the gateway holds it: decoded once, encoded once."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

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
    read_ns: int = 0
    """When the tail reader took it from the log (``time.monotonic_ns``); 0 for an event read for
    a resume, whose delivery is timed as the resume's."""

    @property
    def sse(self) -> bytes:
        """The SSE form, built the first time an SSE client needs it."""
        if self._sse is None:
            self._sse = sse_event(self.json, event=EVENT_TYPES[type(self.event)], id=self.cursor)
        return self._sse


Packed = tuple[Any, ...]
"""An entry as the hub's window keeps it, one flat tuple of plain values: offset, cursor, JSON
frame, event type (an index into ``EVENT_TYPES``), then the event's fields. The collector stops
tracking such a tuple the first time it looks at it. An ``Entry`` and its event instead are two
objects every full collection walks: with a window of 100,000 events, 200,000 objects, 25 ms a
collection on an idle machine and 50-200 ms under load, a pause all the process's clients wait out.
(A token event's fields are strings, ints and bytes; the few events holding a dataclass, such as a
start's parameters, stay tracked.)"""

_KINDS: tuple[type[Any], ...] = tuple(EVENT_TYPES)
_KIND_OF: dict[type[Any], int] = {cls: i for i, cls in enumerate(_KINDS)}
_VALUES: dict[type[Any], Any] = {cls: attrgetter(*(f.name for f in fields(cls))) for cls in _KINDS}
_FIELDS_AT = 4


def pack(entry: Entry) -> Packed:
    """``entry`` as plain values (``unpack`` gives it back, equal; its SSE form is rebuilt on need)."""
    event = entry.event
    cls = type(event)
    return (entry.offset, entry.cursor, entry.json, _KIND_OF[cls], *_VALUES[cls](event))


def unpack(packed: Packed) -> Entry:
    return Entry(packed[0], _KINDS[packed[3]](*packed[_FIELDS_AT:]), packed[1], packed[2])


def entry_of(event: TokenEvent, *, epoch: str, partition: int, offset: int, read_ns: int = 0) -> Entry:
    cursor = Cursor(epoch, partition, offset).format()
    return Entry(offset, event, cursor, event_json(event, cursor), None, read_ns)


def make_entry(
    value: bytes | None, *, epoch: str, partition: int, offset: int, read_ns: int = 0
) -> Entry | None:
    """The entry of a record, or None for a record that is not a tokenlog event (skipped)."""
    try:
        event = TOKENS.decode(value, partition=partition, offset=offset)
    except DecodeError:
        return None
    return entry_of(event, epoch=epoch, partition=partition, offset=offset, read_ns=read_ns)
