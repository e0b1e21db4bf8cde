"""The request and response bodies of the public API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from gateway.errors import RULES, Action

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""Conversation, prompt, request and device ids."""

Id = Annotated[str, Field(pattern=ID_PATTERN, max_length=128)]


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)


class PromptBody(BaseModel):
    """``POST /v1/conversations/{cid}/prompts`` (and the WebSocket ``prompt`` frame)."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: Id | None = None
    """Idempotency key chosen by the client; generated when absent (then a retry is a new prompt)."""
    text: str = Field(min_length=1)
    model: str = Field(default="", max_length=128)
    device_id: Id | None = None
    parameters: Parameters = Field(default_factory=Parameters)


class CancelBody(BaseModel):
    """``POST /v1/conversations/{cid}/cancel`` (and the WebSocket ``cancel`` frame). With neither
    ``response_id`` nor ``prompt_id``, whatever answer is running is stopped."""

    model_config = ConfigDict(extra="forbid")

    request_id: Id | None = None
    response_id: Id | None = None
    prompt_id: Id | None = None
    device_id: Id | None = None


class DevTokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
    ttl_s: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)


class Accepted(BaseModel):
    """202: the command is durable in ``conversation.prompts``."""

    conversation_id: str
    prompt_id: str | None = None
    response_id: str | None = None
    """The id the answer will carry (derived from conversation and prompt)."""
    request_id: str | None = None
    partition: int
    offset: int
    duplicate: bool = False
    """True when this gateway had already accepted the same prompt_id (nothing new was written)."""


class DevToken(BaseModel):
    token: str
    user_id: str
    expires_at: int


def _enum(values: list[str]) -> dict[str, JsonValue]:
    return {"enum": list[JsonValue](values)}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(json_schema_extra=_enum(sorted(RULES)))
    """One of the error table's codes (``errors.py``)."""
    message: str
    action: str = Field(json_schema_extra=_enum([a.value for a in Action]))


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses: the typed body, described by the codes of
    the error table that travel with each."""
    return {
        status: {
            "model": ErrorBody,
            "description": "; ".join(f"{r.code}: {r.meaning}" for r in RULES.values() if r.status == status),
        }
        for status in statuses
    }


ERROR_RESPONSES = error_responses(400, 408, 413, 429)
"""What any route may answer: the Host check and validation (400), the body limits (408, 413)
and the per-address connection cap (429)."""
CONVERSATION_ERRORS = error_responses(401, 403, 404, 421, 503)
"""What a route of one conversation may answer besides: no or a bad token, another user's, no
such conversation (or an id with a ``/``: no such route), another shard's partition, Kafka or the
owner not answering in time."""


class ChatPart(BaseModel):
    """One part of a ``useChat`` message (text, file, reasoning, tool, step-start, ...): only
    text parts are read."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    role: str
    parts: list[ChatPart] = Field(default_factory=list)


class ChatBody(BaseModel):
    """``POST /api/chat``: the body of the AI SDK's default chat transport (``{id, messages,
    trigger, messageId, ...}``; fields it adds are kept). The last user message with text is the
    prompt (``aisdk.last_user_prompt``)."""

    model_config = ConfigDict(extra="allow")

    id: Id
    messages: list[ChatMessage]
