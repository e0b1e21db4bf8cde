"""Prompt and cancel commands: validated, turned into records (pure), produced to
``conversation.prompts`` with an idempotent ``acks=all`` producer; a 202 is answered only after
the broker has acknowledged the write.

Idempotency on ``prompt_id``: the worker answers a prompt once however often it appears in the
log (the answer id is derived from conversation and prompt id). The gateway also remembers the
prompts it accepted recently, so a client's retry returns the same 202 without a second write,
and the same ``prompt_id`` with different text is refused (409).

Prompt markers (the demo provider's ``[[tokens=N]]`` and co.) are checked against the caps with
the worker's own parser (``pipeline.providers.markers``) before anything is written: over a cap,
400 ``invalid_marker`` on every route that takes a prompt (JSON API, WebSocket, ``/api/chat``).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from gateway.errors import InvalidMarker, PromptIdReused, Unavailable
from gateway.models import Accepted, CancelBody, PromptBody
from pipeline.errors import MarkerError
from pipeline.ids import response_id
from pipeline.providers.markers import parse_markers
from pipeline.settings import MarkerCaps
from schemas.codec import PROMPTS
from schemas.records import CancelRequested, GenerationParameters, PromptRecord, PromptSubmitted, now_ms
from schemas.registry import PROMPTS_TOPIC


def prompt_record(conversation_id: str, user_id: str, body: PromptBody, *, at: int) -> PromptSubmitted:
    p = body.parameters
    return PromptSubmitted(
        conversation_id=conversation_id,
        prompt_id=body.prompt_id or f"p-{uuid.uuid4().hex}",
        user_id=user_id,
        text=body.text,
        submitted_at=at,
        device_id=body.device_id or "",
        model=body.model,
        parameters=GenerationParameters(p.max_tokens, p.temperature, p.top_p, p.seed),
    )


def cancel_record(conversation_id: str, user_id: str, body: CancelBody, *, at: int) -> CancelRequested:
    return CancelRequested(
        conversation_id=conversation_id,
        request_id=body.request_id or f"c-{uuid.uuid4().hex}",
        user_id=user_id,
        requested_at=at,
        response_id=body.response_id,
        prompt_id=body.prompt_id,
        device_id=body.device_id or "",
    )


def _fingerprint(body: PromptBody) -> str:
    return hashlib.sha256(body.model_dump_json(exclude={"device_id"}).encode()).hexdigest()


@dataclass
class Commands:
    producer: Any
    """A started ``AIOKafkaProducer`` with ``enable_idempotence=True`` (acks=all)."""
    timeout_s: float = 10.0
    remember: int = 100_000
    markers: MarkerCaps = field(default_factory=MarkerCaps)
    _accepted: OrderedDict[tuple[str, str], tuple[str, Accepted]] = field(default_factory=OrderedDict)

    async def _produce(self, record: PromptRecord) -> tuple[int, int]:
        try:
            meta = await asyncio.wait_for(
                self.producer.send_and_wait(
                    PROMPTS_TOPIC, PROMPTS.encode(record), key=record.conversation_id.encode()
                ),
                self.timeout_s,
            )
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"the prompt could not be written to Kafka: {type(exc).__name__}") from exc
        return int(meta.partition), int(meta.offset)

    async def prompt(self, conversation_id: str, user_id: str, body: PromptBody) -> Accepted:
        try:
            parse_markers(body.text, self.markers)
        except MarkerError as exc:
            raise InvalidMarker(str(exc)) from exc
        record = prompt_record(conversation_id, user_id, body, at=now_ms())
        key = (conversation_id, record.prompt_id)
        fingerprint = _fingerprint(body.model_copy(update={"prompt_id": record.prompt_id}))
        seen = self._accepted.get(key)
        if seen is not None:
            if seen[0] != fingerprint:
                raise PromptIdReused(f"prompt_id {record.prompt_id!r} was already used with another prompt")
            return seen[1].model_copy(update={"duplicate": True})
        partition, offset = await self._produce(record)
        accepted = Accepted(
            conversation_id=conversation_id,
            prompt_id=record.prompt_id,
            response_id=response_id(conversation_id, record.prompt_id),
            partition=partition,
            offset=offset,
        )
        self._accepted[key] = (fingerprint, accepted)
        while len(self._accepted) > self.remember:
            self._accepted.popitem(last=False)
        return accepted

    async def cancel(self, conversation_id: str, user_id: str, body: CancelBody) -> Accepted:
        record = cancel_record(conversation_id, user_id, body, at=now_ms())
        partition, offset = await self._produce(record)
        return Accepted(
            conversation_id=conversation_id,
            request_id=record.request_id,
            response_id=record.response_id,
            prompt_id=record.prompt_id,
            partition=partition,
            offset=offset,
        )
