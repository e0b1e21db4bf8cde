"""Python types mirroring the Avro records, and their pure conversion to and from Avro dicts.

Every type is a frozen, slotted dataclass. Times are ``int`` milliseconds since the Unix epoch
(UTC), exactly as stored (``timestamp-millis``), so the hot path never builds ``datetime``
objects. Each record carries ``conversation_id``: on the wire it is the envelope's field (and
the record key), in Python it is flattened into the record for convenience.

The records on ``conversation.prompts`` are facts about accepted commands (the gateway accepted
a prompt: PromptSubmitted), so they are named in the past tense like events; imperative command
types (SubmitPrompt, CancelResponse) belong to the services that decide on them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, TypeAlias

from schemas.errors import DecodeError, EncodeError


def now_ms() -> int:
    """The current time as stored in every ``*_at`` field."""
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- shared parts


@dataclass(frozen=True, slots=True)
class GenerationParameters:
    """Sampling parameters passed to the model provider; None means the provider's default."""

    max_tokens: int | None = None
    """Upper bound on answer tokens."""
    temperature: float | None = None
    """Sampling temperature."""
    top_p: float | None = None
    """Nucleus sampling mass."""
    seed: int | None = None
    """Sampling seed, where the provider supports one."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting of one answer."""

    prompt_tokens: int = 0
    """Tokens in the prompt (and context)."""
    completion_tokens: int = 0
    """Tokens in the answer."""
    total_tokens: int = 0
    """prompt_tokens + completion_tokens."""


class ResumeMode(StrEnum):
    """How a takeover treats the partial answer."""

    CONTINUE = "CONTINUE"
    """The text so far stays; the next delta has seq ``resumed_after_seq + 1``."""
    RESTART = "RESTART"
    """Clients discard the partial text; seq starts again at 0."""


# --------------------------------------------------------------------------- conversation.prompts


@dataclass(frozen=True, slots=True)
class PromptSubmitted:
    """A user asked a question; answered exactly once per ``prompt_id``."""

    AVRO_NAME: ClassVar[str] = "dev.tokenlog.prompts.PromptSubmitted"

    conversation_id: str
    """The conversation the prompt belongs to (the record key)."""
    prompt_id: str
    """Client-chosen idempotency key: submitted twice, answered once."""
    user_id: str
    """The authenticated user who submitted it (the conversation's owner)."""
    text: str
    """The prompt text."""
    submitted_at: int
    """When the gateway accepted it (ms since the epoch, UTC)."""
    device_id: str = ""
    """The device or tab that submitted it; empty when unknown."""
    model: str = ""
    """Model to answer with; empty means the worker's default."""
    parameters: GenerationParameters = field(default_factory=GenerationParameters)
    """Generation parameters."""


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """A user asked to stop an answer; cancelling a finished answer is a no-op."""

    AVRO_NAME: ClassVar[str] = "dev.tokenlog.prompts.CancelRequested"

    conversation_id: str
    """The conversation whose answer is to stop."""
    request_id: str
    """Client-chosen id of this cancel request."""
    user_id: str
    """Who asked to cancel."""
    requested_at: int
    """When the gateway accepted the request (ms since the epoch, UTC)."""
    response_id: str | None = None
    """The answer to stop; with prompt_id None too: whatever answer is running."""
    prompt_id: str | None = None
    """Alternatively the prompt whose answer is to stop."""
    device_id: str = ""
    """The device or tab that asked; empty when unknown."""


# --------------------------------------------------------------------------- conversation.tokens


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    """An answer began; carries the prompt so the tokens topic alone tells the conversation."""

    AVRO_NAME: ClassVar[str] = "dev.tokenlog.tokens.ResponseStarted"

    conversation_id: str
    """The conversation (the record key)."""
    response_id: str
    """Id of the answer; stable across failover attempts."""
    prompt_id: str
    """The prompt being answered."""
    user_id: str
    """The user who submitted the prompt."""
    prompt_text: str
    """The prompt text."""
    model: str
    """The model that answers (resolved, never empty)."""
    started_at: int
    """When generation began (ms since the epoch, UTC)."""
    device_id: str = ""
    """The device that submitted the prompt."""
    parameters: GenerationParameters = field(default_factory=GenerationParameters)
    """The generation parameters in effect."""
    attempt: int = 0
    """Generation attempt; 0 first, incremented by each takeover."""
    prev_hash: bytes = b""
    """The ``hash`` of the answer's previous event in the chain; empty for its first event (and in
    records written before schema v2). See ``schemas/chain.py``."""
    hash: bytes = b""
    """SHA-256 of ``prev_hash`` followed by this event's content (its v1 Avro encoding)."""


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """A piece of answer text; seq is contiguous from 0 within the answer."""

    AVRO_NAME: ClassVar[str] = "dev.tokenlog.tokens.TokenDelta"

    conversation_id: str
    """The conversation (the record key)."""
    response_id: str
    """The answer this text belongs to."""
    seq: int
    """Position in the answer, contiguous from 0."""
    text: str
    """The text (several model tokens when coalesced)."""
    produced_at: int
    """When the worker produced it (ms since the epoch, UTC)."""
    attempt: int = 0
    """Generation attempt that wrote it; older attempts are fenced."""
    prev_hash: bytes = b""
    """The ``hash`` of the answer's previous event in the chain; empty for its first event (and in
    records written before schema v2). See ``schemas/chain.py``."""
    hash: bytes = b""
    """SHA-256 of ``prev_hash`` followed by this event's content (its v1 Avro encoding)."""


@dataclass(frozen=True, slots=True)
class ResponseCompleted:
    """The answer ended normally. Terminal."""

    AVRO_NAME: ClassVar[str] = "dev.tokenlog.tokens.ResponseCompleted"

    conversation_id: str
    """The conversation (the record key)."""
    response_id: str
    """The answer that ended."""
    final_seq: int
    """seq of the last TokenDelta; -1 when the answer is empty."""
    completed_at: int
    """When it ended (ms since the epoch, UTC)."""
    finish_reason: str = "stop"
    """Why the model stopped: stop, length, content_filter, ..."""
    usage: Usage = field(default_factory=Usage)
    """Token counts, where the provider reports them."""
    attempt: int = 0
    """Generation attempt that completed it."""
    prev_hash: bytes = b""
    """The ``hash`` of the answer's previous event in the chain; empty for its first event (and in
    records written before schema v2). See ``schemas/chain.py``."""
    hash: bytes = b""
    """SHA-256 of ``prev_hash`` followed by this event's content (its v1 Avro encoding)."""


@dataclass(frozen=True, slots=True)
class ResponseFailed:
    """The answer ended with an error. Terminal."""

    AVRO_NAME: ClassVar[str] = "dev.tokenlog.tokens.ResponseFailed"

    conversation_id: str
    """The conversation (the record key)."""
    response_id: str
    """The answer that failed."""
    last_seq: int
    """seq of the last TokenDelta before the failure; -1 when none."""
    error_class: str
    """Stable machine-readable class: provider_timeout, provider_rejected, internal, ..."""
    failed_at: int
    """When it failed (ms since the epoch, UTC)."""
    error_message: str = ""
    """Human-readable detail; never contains secrets."""
    retriable: bool = False
    """True when submitting the prompt again may succeed."""
    attempt: int = 0
    """Generation attempt that failed."""
    prev_hash: bytes = b""
    """The ``hash`` of the answer's previous event in the chain; empty for its first event (and in
    records written before schema v2). See ``schemas/chain.py``."""
    hash: bytes = b""
    """SHA-256 of ``prev_hash`` followed by this event's content (its v1 Avro encoding)."""


@dataclass(frozen=True, slots=True)
class ResponseCancelled:
    """The answer was stopped by a user. Terminal."""

    AVRO_NAME: ClassVar[str] = "dev.tokenlog.tokens.ResponseCancelled"

    conversation_id: str
    """The conversation (the record key)."""
    response_id: str
    """The answer that was stopped."""
    last_seq: int
    """seq of the last TokenDelta before the stop; -1 when none."""
    cancelled_at: int
    """When it stopped (ms since the epoch, UTC)."""
    cancel_request_id: str = ""
    """The CancelRequested.request_id that stopped it."""
    cancelled_by_user_id: str = ""
    """Who stopped it."""
    cancelled_by_device_id: str = ""
    """From which device or tab."""
    attempt: int = 0
    """Generation attempt that was stopped."""
    prev_hash: bytes = b""
    """The ``hash`` of the answer's previous event in the chain; empty for its first event (and in
    records written before schema v2). See ``schemas/chain.py``."""
    hash: bytes = b""
    """SHA-256 of ``prev_hash`` followed by this event's content (its v1 Avro encoding)."""


@dataclass(frozen=True, slots=True)
class ResponseResumed:
    """A worker took over an answer whose worker died; older attempts are fenced from here."""

    AVRO_NAME: ClassVar[str] = "dev.tokenlog.tokens.ResponseResumed"

    conversation_id: str
    """The conversation (the record key)."""
    response_id: str
    """The answer taken over."""
    attempt: int
    """The new attempt number."""
    resumed_after_seq: int
    """CONTINUE: the last seq kept. RESTART: -1."""
    mode: ResumeMode
    """CONTINUE keeps the text so far; RESTART discards it."""
    resumed_at: int
    """When the new worker took over (ms since the epoch, UTC)."""
    reason: str = ""
    """Why, e.g. worker_lost."""
    prev_hash: bytes = b""
    """The ``hash`` of the answer's previous event in the chain; empty for its first event (and in
    records written before schema v2). See ``schemas/chain.py``."""
    hash: bytes = b""
    """SHA-256 of ``prev_hash`` followed by this event's content (its v1 Avro encoding)."""


PromptRecord: TypeAlias = PromptSubmitted | CancelRequested
"""Any record of ``conversation.prompts``."""
TokenEvent: TypeAlias = (
    ResponseStarted | TokenDelta | ResponseCompleted | ResponseFailed | ResponseCancelled | ResponseResumed
)
"""Any record of ``conversation.tokens``."""
TerminalEvent: TypeAlias = ResponseCompleted | ResponseFailed | ResponseCancelled
"""Events after which no event of the same response follows."""
Record: TypeAlias = PromptRecord | TokenEvent

PROMPT_TYPES: tuple[type[Any], ...] = (PromptSubmitted, CancelRequested)
TOKEN_TYPES: tuple[type[Any], ...] = (
    ResponseStarted,
    TokenDelta,
    ResponseCompleted,
    ResponseFailed,
    ResponseCancelled,
    ResponseResumed,
)
TERMINAL_TYPES: tuple[type[Any], ...] = (ResponseCompleted, ResponseFailed, ResponseCancelled)


# --------------------------------------------------------------------------- conversion

_NESTED: dict[str, type[Any]] = {"parameters": GenerationParameters, "usage": Usage}
_BY_NAME: dict[str, type[Any]] = {cls.AVRO_NAME: cls for cls in (*PROMPT_TYPES, *TOKEN_TYPES)}
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if f.name != "conversation_id") for cls in _BY_NAME.values()
}
_NEEDS_CONVERSION = frozenset(cls for cls, names in _FIELDS.items() if set(names) & {*_NESTED, "mode"})
_NESTED_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _NESTED.values()
}


def to_avro(record: Record) -> dict[str, Any]:
    """The Avro envelope dict of a record, with the payload in fastavro's tuple notation
    ``(fullname, dict)`` so the union branch is named, never guessed."""
    cls = type(record)
    try:
        names = _FIELDS[cls]
    except KeyError as exc:
        raise EncodeError(f"not a tokenlog record: {cls.__name__}") from exc
    payload: dict[str, Any] = {}
    for name in names:
        value = getattr(record, name)
        if name in _NESTED:
            value = {n: getattr(value, n) for n in _NESTED_FIELDS[_NESTED[name]]}
        elif isinstance(value, ResumeMode):
            value = value.value
        payload[name] = value
    return {"conversation_id": record.conversation_id, "payload": (cls.AVRO_NAME, payload)}


def from_avro(envelope: dict[str, Any]) -> Record:
    """The record of an Avro envelope dict as fastavro reads it with ``return_record_name``.

    The payload was resolved to the current reader schema, whose fields are exactly the
    dataclass's (a contract test checks it), so it is passed straight as keyword arguments."""
    try:
        name, payload = envelope["payload"]
        cls = _BY_NAME[name]
        if cls in _NEEDS_CONVERSION:
            payload = dict(payload)
            for key, nested in _NESTED.items():
                if key in payload:
                    payload[key] = nested(**payload[key])
            if "mode" in payload:
                payload["mode"] = ResumeMode(payload["mode"])
        record: Record = cls(envelope["conversation_id"], **payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"envelope does not hold a known tokenlog record: {exc!r}") from exc
    return record
