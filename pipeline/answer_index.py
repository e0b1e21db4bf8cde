"""The answer index: which prompts already have an answer, so none is answered twice.

A compacted topic, ``conversation.answers``, co-partitioned with the prompts: key
``<conversation_id>\\x00<prompt_id>``, value JSON ``{"response_id", "status", "scan_from"}``:

- ``status: "started"`` is written (and acknowledged) *before* an answer's first event, with
  ``scan_from`` = an offset of ``conversation.tokens`` at or before that first event;
- ``status: "done"`` after its terminal event is durable.

Each attempt at an answer is counted here, so a prompt that kills its workers cannot be taken
over forever (see ``lost_attempts``): before attempt N starts (the first, or a takeover) the
worker writes ``started`` with ``"attempt": N``, keeping the first ``scan_from``; a worker that
hands an unfinished answer over gracefully (SIGTERM, or a rebalance it is still a member of)
adds its attempt to ``"handed_over"``. Both fields are omitted at their defaults (0 and none), so
entries written before them read the same.

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
    attempt: int = 0
    """The attempt last started (written before it starts)."""
    handed_over: tuple[int, ...] = ()
    """Attempts that ended by a graceful hand-over, not by a crash or a stall."""


def lost_attempts(last_attempt: int, handed_over: tuple[int, ...]) -> int:
    """How many of the attempts ``0..last_attempt`` were lost (their worker killed, or stalled
    until the group moved the partition on) rather than handed over: each started attempt that
    has no terminal event and no hand-over record. -1 (nothing started): 0."""
    return max(0, last_attempt + 1 - len({h for h in handed_over if 0 <= h <= last_attempt}))


IndexKey = tuple[str, str]
"""(conversation_id, prompt_id)."""


def encode_key(key: IndexKey) -> bytes:
    return f"{key[0]}\x00{key[1]}".encode()


def decode_key(raw: bytes) -> IndexKey:
    cid, _, prompt_id = raw.decode().partition("\x00")
    return cid, prompt_id


def encode_entry(entry: IndexEntry) -> bytes:
    data: dict[str, object] = {
        "response_id": entry.response_id,
        "status": entry.status,
        "scan_from": entry.scan_from,
    }
    if entry.attempt:
        data["attempt"] = entry.attempt
    if entry.handed_over:
        data["handed_over"] = list(entry.handed_over)
    return orjson.dumps(data)


def decode_entry(raw: bytes) -> IndexEntry:
    data = orjson.loads(raw)
    return IndexEntry(
        str(data["response_id"]),
        str(data["status"]),
        int(data["scan_from"]),
        int(data.get("attempt", 0)),
        tuple(int(h) for h in data.get("handed_over", ())),
    )


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
