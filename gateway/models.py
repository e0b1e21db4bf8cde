"""The request and response bodies of the public API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

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


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    action: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what}
    for status, what in (
        (400, "invalid request or cursor"),
        (401, "missing, expired or invalid token"),
        (403, "not your conversation"),
        (413, "body too large"),
        (429, "rate limited"),
        (503, "Kafka unavailable"),
    )
}
