"""The cursor: a client's position in ``conversation.tokens``.

Inside, a cursor is ``(epoch, partition, last_offset)``; on the wire it is an opaque string that
clients store and send back unchanged (``1.<epoch>.<partition>.<last_offset>``; the leading
``1`` is the format version). Two sentinels stand for positions that name no event:
``beginning`` (everything the log still holds) and ``now`` (only what comes next).

The off-by-one rule, written once: **a cursor names the last event the client has seen**
(``last_offset``). Resuming reads from ``next_offset = last_offset + 1``. A server never hands
out a cursor for an event the client has not received.

``epoch`` identifies the incarnation of the log (for example the topic's id): if the topic is
ever deleted and recreated, offsets start again and every older cursor is refused with
``epoch_changed`` instead of silently pointing at other events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from schemas.errors import CursorError

FORMAT_VERSION = "1"
MAX_CURSOR_LENGTH = 128
_EPOCH = re.compile(r"[A-Za-z0-9_-]{1,64}")
_WIRE = re.compile(r"1\.([A-Za-z0-9_-]{1,64})\.(0|[1-9][0-9]{0,8})\.(-1|0|[1-9][0-9]{0,18})")


class Sentinel(StrEnum):
    """Positions that name no event."""

    BEGINNING = "beginning"
    """Everything the log still holds for the conversation."""
    NOW = "now"
    """Only events appended from now on."""


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in ``conversation.tokens``: the last event a client has seen."""

    epoch: str
    """Incarnation of the log; changes if the topic is recreated."""
    partition: int
    """The partition holding the conversation."""
    last_offset: int
    """Offset of the last event seen; -1 when nothing in this partition has been seen."""

    def __post_init__(self) -> None:
        if not _EPOCH.fullmatch(self.epoch):
            raise CursorError("malformed", f"epoch must match {_EPOCH.pattern}, got {self.epoch!r}")
        if not 0 <= self.partition < 1_000_000_000:
            raise CursorError("malformed", f"partition out of range: {self.partition}")
        if not -1 <= self.last_offset < 2**63 - 1:
            raise CursorError("malformed", f"offset out of range: {self.last_offset}")

    @property
    def next_offset(self) -> int:
        """Where a resume starts reading: the event after the last one seen."""
        return self.last_offset + 1

    def after(self, offset: int) -> Cursor:
        """The cursor of the event at ``offset`` in the same partition."""
        return Cursor(self.epoch, self.partition, offset)

    def format(self) -> str:
        return f"{FORMAT_VERSION}.{self.epoch}.{self.partition}.{self.last_offset}"

    def __str__(self) -> str:
        return self.format()


Position = Cursor | Sentinel
"""Where a client wants to start: after a cursor, or at a sentinel."""


def parse(text: str | None) -> Position:
    """The position a client sent. ``None``/empty means ``beginning`` is *not* assumed: the
    caller decides (hydrate from a snapshot); this function refuses it as malformed."""
    if not text:
        raise CursorError("malformed", "empty cursor")
    if len(text) > MAX_CURSOR_LENGTH:
        raise CursorError("malformed", f"cursor longer than {MAX_CURSOR_LENGTH} characters")
    for sentinel in Sentinel:
        if text == sentinel.value:
            return sentinel
    match = _WIRE.fullmatch(text)
    if match is None:
        raise CursorError("malformed", f"not a tokenlog cursor: {text[:40]!r}")
    epoch, partition, offset = match.groups()
    return Cursor(epoch, int(partition), int(offset))


def check(cursor: Cursor, *, epoch: str, partition: int) -> Cursor:
    """``cursor`` if it can resume the conversation living in ``partition`` of log ``epoch``."""
    if cursor.epoch != epoch:
        raise CursorError(
            "epoch_changed", f"cursor is from log epoch {cursor.epoch!r}, the log is now {epoch!r}"
        )
    if cursor.partition != partition:
        raise CursorError(
            "wrong_partition",
            f"cursor points into partition {cursor.partition}, the conversation lives in {partition}",
        )
    return cursor
