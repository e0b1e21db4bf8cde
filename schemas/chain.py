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
from typing import Any, TypeVar

import fastavro
from fastavro.schema import to_parsing_canonical_form

from schemas.codec import MAGIC, TOKENS
from schemas.records import TokenEvent, to_avro
from schemas.registry import TOKENS_TOPIC, history

GENESIS = b""
"""``prev_hash`` of an answer's first event."""

_V1, _V2 = history(TOKENS_TOPIC)[:2]
assert _V1.version == "v1", "the chain is defined over the v1 schema of conversation.tokens"


def _without_chain(schema: Any) -> Any:
    if isinstance(schema, dict):
        fields = schema.get("fields")
        kept = {k: _without_chain(v) for k, v in schema.items() if k != "fields"}
        if fields is not None:
            kept["fields"] = [_without_chain(f) for f in fields if f["name"] not in ("prev_hash", "hash")]
        return kept
    if isinstance(schema, list):
        return [_without_chain(s) for s in schema]
    return schema


# v2 is v1 with prev_hash and hash appended to every event record, so a record written with v2 is
# its v1 encoding followed by those two fields: the chain's content is a slice of the record.
assert to_parsing_canonical_form(_without_chain(_V2.raw)) == to_parsing_canonical_form(_V1.raw)
_V2_HEADER = MAGIC + _V2.fingerprint
_WRITES_V2 = TOKENS.writer.fingerprint == _V2.fingerprint
"""The tokens codec writes v2 (else ``seal_encoded`` encodes the sealed event as any other)."""

E = TypeVar("E", bound=TokenEvent)


def content(event: TokenEvent) -> bytes:
    """The bytes the chain covers: ``event`` as the v1 schema writes it (Avro binary, no header)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _V1.parsed, to_avro(event))
    return buf.getvalue()


def content_of(value: bytes, event: TokenEvent) -> bytes:
    """``content(event)`` for the record ``value`` it was decoded from: sliced out of the record
    when it was written with v2 (no re-encoding), encoded again otherwise."""
    chain = _avro_bytes(event.prev_hash) + _avro_bytes(event.hash)
    if value.startswith(_V2_HEADER) and value.endswith(chain) and len(value) >= len(_V2_HEADER) + len(chain):
        return value[len(_V2_HEADER) : len(value) - len(chain)]
    return content(event)


def link(prev_hash: bytes, event: TokenEvent) -> bytes:
    """The hash ``event`` must carry when it follows an event whose hash is ``prev_hash``."""
    return _digest(prev_hash, content(event))


def _digest(prev_hash: bytes, body: bytes) -> bytes:
    """The chain's hash of an event whose content is ``body``."""
    return hashlib.sha256(prev_hash + body).digest()


def seal(event: E, prev_hash: bytes) -> E:
    """``event`` with ``prev_hash`` and its own ``hash`` set: the next link of a chain."""
    return dataclasses.replace(event, prev_hash=prev_hash, hash=link(prev_hash, event))


def seal_encoded(event: E, prev_hash: bytes) -> tuple[E, bytes]:
    """``seal(event, prev_hash)`` and its record as ``TOKENS.encode`` writes it, with the event
    encoded once instead of twice (for its hash, then for the record): a v2 record is the chain's
    content followed by the two chain fields."""
    body = content(event)
    own = _digest(prev_hash, body)
    sealed = dataclasses.replace(event, prev_hash=prev_hash, hash=own)
    if not _WRITES_V2:
        return sealed, TOKENS.encode(sealed)
    return sealed, b"".join((_V2_HEADER, body, _avro_bytes(prev_hash), _avro_bytes(own)))


def _avro_bytes(data: bytes) -> bytes:
    """An Avro ``bytes`` value: its length as a zig-zag varint, then the bytes."""
    n, out = len(data) << 1, bytearray()  # zig-zag of a length (never negative) is a shift
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def chained(event: TokenEvent) -> bool:
    """False for records written before v2 (no chain fields), which cannot be verified."""
    return bool(event.hash)


def intact(event: TokenEvent, value: bytes | None = None) -> bool:
    """The event's content and ``prev_hash`` are what its ``hash`` was computed over; ``value``,
    the record the event was decoded from, saves encoding it again."""
    if value is None:
        return event.hash == link(event.prev_hash, event)
    return event.hash == _digest(event.prev_hash, content_of(value, event))
