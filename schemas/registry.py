"""The schemas under ``schemas/``: the current one per topic and every released version.

Layout::

    schemas/<topic>.avsc                  the current schema (what producers write)
    schemas/history/<topic>/v<N>.avsc     every released version, never edited once released

Each schema is identified on the wire by its CRC-64-AVRO fingerprint of the Parsing Canonical
Form (Avro single-object encoding). fastavro computes the canonical form as the spec defines it
(logical types stripped); the ``avro`` package keeps ``{"type": "long"}`` wrappers around them and
so disagrees with Java on such schemas, which is why fingerprints come from fastavro here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent
PROMPTS_TOPIC = "conversation.prompts"
"""Commands (PromptSubmitted, CancelRequested), keyed by conversation_id."""
TOKENS_TOPIC = "conversation.tokens"
"""Events (ResponseStarted, TokenDelta, ResponseCompleted/Failed/Cancelled/Resumed),
keyed by conversation_id."""
DEADLETTER_TOPIC = "conversation.deadletter"
"""Records a consumer could not decode, unchanged, with their origin in headers."""
ANSWERS_TOPIC = "conversation.answers"
"""The generation worker's compacted prompt_id index (internal, not a public contract)."""
OWNERS_TOPIC = "conversation.owners"
"""The generation worker's compacted owner of each conversation (``schemas.ownership``; internal,
not a public contract)."""
TOPICS = (PROMPTS_TOPIC, TOKENS_TOPIC)
"""Topics with an Avro schema."""


@dataclass(frozen=True)
class SchemaVersion:
    """One schema of a topic, ready to encode and decode with."""

    topic: str
    version: str
    """``v1``, ``v2``, ... for released versions; ``current`` for the working copy."""
    path: Path
    raw: dict[str, Any] = field(repr=False)
    """The schema as written (with docs and logical types)."""
    fingerprint: bytes
    """8 bytes, little-endian CRC-64-AVRO of the Parsing Canonical Form."""
    parsed: Any = field(repr=False)
    """fastavro's parsed form with logical types stripped: times stay int milliseconds."""


def strip_logical_types(schema: Any) -> Any:
    """The same schema without ``logicalType`` annotations (they do not change the bytes)."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    return schema


def schema_fingerprint(raw: dict[str, Any]) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))


def load(topic: str, version: str, path: Path) -> SchemaVersion:
    raw = json.loads(path.read_text())
    return SchemaVersion(
        topic=topic,
        version=version,
        path=path,
        raw=raw,
        fingerprint=schema_fingerprint(raw),
        parsed=fastavro.parse_schema(strip_logical_types(raw)),
    )


@cache
def current(topic: str) -> SchemaVersion:
    """The schema producers of ``topic`` write with."""
    return load(topic, "current", SCHEMA_DIR / f"{topic}.avsc")


def _version_number(path: Path) -> int:
    match = re.fullmatch(r"v(\d+)\.avsc", path.name)
    if match is None:
        raise ValueError(f"history file not named v<N>.avsc: {path}")
    return int(match.group(1))


@cache
def history(topic: str) -> tuple[SchemaVersion, ...]:
    """Every released version of ``topic``'s schema, oldest first."""
    paths = sorted((SCHEMA_DIR / "history" / topic).glob("*.avsc"), key=_version_number)
    return tuple(load(topic, p.stem, p) for p in paths)


@cache
def by_fingerprint(topic: str) -> dict[bytes, SchemaVersion]:
    """Every writer schema a consumer of ``topic`` can decode, by fingerprint."""
    known = {v.fingerprint: v for v in history(topic)}
    cur = current(topic)
    known.setdefault(cur.fingerprint, cur)
    return known
