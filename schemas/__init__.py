"""The event contract of tokenlog: Avro schemas of every command and event (``*.avsc``), their
Python types, the wire codec and the cursor. Other teams build on the ``.avsc`` files; Python
services import from here."""

from schemas.codec import PROMPTS, TOKENS, TopicCodec, codec_for
from schemas.cursor import Cursor, Position, Sentinel
from schemas.errors import ContractError, CursorError, DecodeError, EncodeError, UnknownSchemaError
from schemas.records import (
    CancelRequested,
    GenerationParameters,
    PromptRecord,
    PromptSubmitted,
    Record,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TerminalEvent,
    TokenDelta,
    TokenEvent,
    Usage,
    now_ms,
)
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC

__all__ = [
    "PROMPTS",
    "PROMPTS_TOPIC",
    "TOKENS",
    "TOKENS_TOPIC",
    "CancelRequested",
    "ContractError",
    "Cursor",
    "CursorError",
    "DecodeError",
    "EncodeError",
    "GenerationParameters",
    "Position",
    "PromptRecord",
    "PromptSubmitted",
    "Record",
    "ResponseCancelled",
    "ResponseCompleted",
    "ResponseFailed",
    "ResponseResumed",
    "ResponseStarted",
    "ResumeMode",
    "Sentinel",
    "TerminalEvent",
    "TokenDelta",
    "TokenEvent",
    "TopicCodec",
    "UnknownSchemaError",
    "Usage",
    "codec_for",
    "now_ms",
]
