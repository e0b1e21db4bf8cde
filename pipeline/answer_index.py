"""The answer index: which prompts already have an answer, so none is answered twice.

A compacted topic, ``conversation.answers``, co-partitioned with the prompts: key
``<conversation_id>\\x00<prompt_id>``, value JSON ``{"response_id", "status", "scan_from"}``:

- ``status: "started"`` is written (and acknowledged) *before* an answer's first event, with
  ``scan_from`` = an offset of ``conversation.tokens`` at or before that first event;
- ``status: "done"`` after its terminal event is durable.

When a worker is assigned a partition it loads the index partition (one record per prompt within
its retention, the idempotency window) and, for answers still "started", reads the tokens
partition from the lowest ``scan_from`` to learn how far each got. Internal to the worker; not a
public contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas.registry import ANSWERS_TOPIC


@dataclass(frozen=True, slots=True)
class IndexEntry:
    response_id: str
    status: str
    """``started`` or ``done``."""
    scan_from: int
    """A ``conversation.tokens`` offset at or before the answer's first event."""


IndexKey = tuple[str, str]
"""(conversation_id, prompt_id)."""


def encode_key(key: IndexKey) -> bytes:
    return f"{key[0]}\x00{key[1]}".encode()


def decode_key(raw: bytes) -> IndexKey:
    cid, _, prompt_id = raw.decode().partition("\x00")
    return cid, prompt_id


def encode_entry(entry: IndexEntry) -> bytes:
    return orjson.dumps(
        {"response_id": entry.response_id, "status": entry.status, "scan_from": entry.scan_from}
    )


def decode_entry(raw: bytes) -> IndexEntry:
    data = orjson.loads(raw)
    return IndexEntry(str(data["response_id"]), str(data["status"]), int(data["scan_from"]))


class AnswerIndex(Protocol):
    async def put(self, partition: int, key: IndexKey, entry: IndexEntry) -> None:
        """Write durably (acknowledged by all in-sync replicas)."""
        ...


@dataclass
class KafkaAnswerIndex:
    producer: Any
    topic: str = ANSWERS_TOPIC

    async def put(self, partition: int, key: IndexKey, entry: IndexEntry) -> None:
        await self.producer.send_and_wait(
            self.topic, encode_entry(entry), key=encode_key(key), partition=partition
        )


@dataclass
class MemoryAnswerIndex:
    entries: dict[tuple[int, IndexKey], IndexEntry] = field(default_factory=dict)

    async def put(self, partition: int, key: IndexKey, entry: IndexEntry) -> None:
        self.entries[(partition, key)] = entry
