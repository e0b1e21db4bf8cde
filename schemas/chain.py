"""The hash chain of an answer (``conversation.tokens`` schema v2): tamper evidence for audit.

Every event the generation worker writes carries two fields:

- ``prev_hash``: the ``hash`` of the answer's previous event, as the writer read the answer; empty
  (``b""``) for the answer's first event;
- ``hash``: ``SHA-256(prev_hash || content)``, where ``content`` is the event as the **v1 schema**
  encodes it: the Avro binary of the v1 envelope (``conversation_id``, then the payload union).

Hashing the v1 encoding keeps the definition fixed while the schema evolves: v1 is released and
never edited, any Avro library can write it (after resolving a newer record to it), and doubles
are hashed as their IEEE bytes, not as text. Fields added after v2 are not covered; a version that
needs them covered must define a new chain (and say so in ``schemas/EVOLUTION.md``).

Which event is "previous" follows the reader rule (``schemas/answers.py``): the last event the
rule accepted. A takeover's ``ResponseResumed`` links to the last accepted event the new worker
read; so zombie writes that land between that read and the takeover record are visibly outside
the chain. ``pipeline.replay.verify`` checks all of this; this module is only the arithmetic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import TypeVar

import fastavro

from schemas.records import TokenEvent, to_avro
from schemas.registry import TOKENS_TOPIC, history

GENESIS = b""
"""``prev_hash`` of an answer's first event."""

_V1 = history(TOKENS_TOPIC)[0]
assert _V1.version == "v1", "the chain is defined over the v1 schema of conversation.tokens"

E = TypeVar("E", bound=TokenEvent)


def content(event: TokenEvent) -> bytes:
    """The bytes the chain covers: ``event`` as the v1 schema writes it (Avro binary, no header)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _V1.parsed, to_avro(event))
    return buf.getvalue()


def link(prev_hash: bytes, event: TokenEvent) -> bytes:
    """The hash ``event`` must carry when it follows an event whose hash is ``prev_hash``."""
    return hashlib.sha256(prev_hash + content(event)).digest()


def seal(event: E, prev_hash: bytes) -> E:
    """``event`` with ``prev_hash`` and its own ``hash`` set: the next link of a chain."""
    return dataclasses.replace(event, prev_hash=prev_hash, hash=link(prev_hash, event))


def chained(event: TokenEvent) -> bool:
    """False for records written before v2 (no chain fields), which cannot be verified."""
    return bool(event.hash)


def intact(event: TokenEvent) -> bool:
    """The event's content and ``prev_hash`` are what its ``hash`` was computed over."""
    return event.hash == link(event.prev_hash, event)
