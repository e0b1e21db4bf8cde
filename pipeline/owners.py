"""The generation worker's record of who owns each conversation, so it never answers a stranger.

A compacted topic (compact only, never deleted), ``conversation.owners``, co-partitioned with the
prompts: key ``<conversation_id>``, value JSON ``{"owner", "offset"}`` (the user, and the prompts
offset of the prompt that claimed the conversation, ``schemas.ownership``). The worker loads the
partition when it is assigned one, before any of its prompts is handled (as it loads the answer
index), and writes a claim, acknowledged, before any prompt read with it is handed on: a worker
that takes the partition over knows every owner an answer was written for.

Migration: a conversation whose first prompt was read before this topic existed has no record;
the first of its prompts a worker reads after the upgrade claims it. Internal to the worker; not
a public contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas.registry import OWNERS_TOPIC


@dataclass(frozen=True, slots=True)
class OwnerEntry:
    owner: str
    """The user of the conversation's first prompt."""
    offset: int
    """That prompt's offset in ``conversation.prompts``."""


Claimed = tuple[str, OwnerEntry]
"""(conversation_id, its owner)."""


def encode_entry(entry: OwnerEntry) -> bytes:
    return orjson.dumps({"owner": entry.owner, "offset": entry.offset})


def decode_entry(raw: bytes) -> OwnerEntry:
    data = orjson.loads(raw)
    return OwnerEntry(str(data["owner"]), int(data["offset"]))


class OwnerLog(Protocol):
    async def put(self, partition: int, claims: Sequence[Claimed]) -> None:
        """Write every claim durably (acknowledged by all in-sync replicas) before returning."""
        ...


@dataclass
class KafkaOwnerLog:
    producer: Any
    topic: str = OWNERS_TOPIC

    async def put(self, partition: int, claims: Sequence[Claimed]) -> None:
        sent = [
            await self.producer.send(self.topic, encode_entry(entry), key=cid.encode(), partition=partition)
            for cid, entry in claims
        ]
        await asyncio.gather(*sent)  # one round trip for a batch's claims, each acknowledged


@dataclass
class MemoryOwnerLog:
    entries: dict[tuple[int, str], OwnerEntry] = field(default_factory=dict)

    async def put(self, partition: int, claims: Sequence[Claimed]) -> None:
        for cid, entry in claims:
            self.entries[(partition, cid)] = entry


__all__ = [
    "Claimed",
    "KafkaOwnerLog",
    "MemoryOwnerLog",
    "OwnerEntry",
    "OwnerLog",
    "decode_entry",
    "encode_entry",
]
