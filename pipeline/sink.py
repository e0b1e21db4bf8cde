"""Where generated events go: ``conversation.tokens`` through an idempotent producer.

``EventSink`` is the boundary; ``KafkaEventSink`` is the real one and ``MemoryEventSink`` its
in-memory twin for unit tests of the generation logic (never a stand-in for Kafka tests).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.codec import TOKENS
from schemas.records import TokenEvent
from schemas.registry import TOKENS_TOPIC


class EventSink(Protocol):
    async def emit(
        self, event: TokenEvent, partition: int, value: bytes | None = None
    ) -> asyncio.Future[int]:
        """Queue ``event`` for ``partition``; the future resolves to its offset once durable.
        ``value``: the event's record as ``TOKENS.encode`` writes it, when the caller has it
        already (``schemas.chain.seal_encoded``)."""
        ...


@dataclass
class KafkaEventSink:
    """Produces token events to ``conversation.tokens`` (idempotent, acks=all)."""

    producer: Any
    topic: str = TOKENS_TOPIC
    last_offsets: dict[int, int] = field(default_factory=dict)
    """The highest offset written per partition (a lower bound of the partition's end)."""

    async def emit(
        self, event: TokenEvent, partition: int, value: bytes | None = None
    ) -> asyncio.Future[int]:
        record = TOKENS.encode(event) if value is None else value
        delivery = await self.producer.send(
            self.topic, record, key=event.conversation_id.encode(), partition=partition
        )
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                result.cancel()
            elif (exc := fut.exception()) is not None:
                result.set_exception(exc)
            else:
                offset = int(fut.result().offset)
                self.last_offsets[partition] = max(self.last_offsets.get(partition, -1), offset)
                result.set_result(offset)

        delivery.add_done_callback(done)
        return result


@dataclass
class MemoryEventSink:
    """The in-memory twin: a list of (partition, offset, event) in append order."""

    log: list[tuple[int, int, TokenEvent]] = field(default_factory=list)

    async def emit(
        self, event: TokenEvent, partition: int, value: bytes | None = None
    ) -> asyncio.Future[int]:
        if value is not None and TOKENS.decode(value) != event:
            raise ValueError(f"the record given with {event!r} holds {TOKENS.decode(value)!r}")
        offset = len(self.log)
        self.log.append((partition, offset, event))
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        result.set_result(offset)
        return result

    def events(self, response_id: str | None = None) -> list[TokenEvent]:
        return [e for _, _, e in self.log if response_id is None or e.response_id == response_id]
