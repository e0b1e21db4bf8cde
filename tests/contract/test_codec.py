"""The wire codec: every record round-trips; anything else is a typed DecodeError with its origin."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import HEADER_SIZE, MAGIC, PROMPTS, TOKENS, codec_for
from schemas.errors import DecodeError, EncodeError, UnknownSchemaError
from schemas.records import (
    CancelRequested,
    GenerationParameters,
    PromptSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    Usage,
)
from schemas.registry import current
from tests.contract.strategies import prompt_records, token_events

T = 1_795_000_000_123

EXAMPLES: list[Any] = [
    PromptSubmitted(
        "c-1",
        "p-1",
        "u-1",
        "Explain Kafka in one line",
        T,
        "tab-1",
        "demo",
        GenerationParameters(max_tokens=256, temperature=0.7, top_p=None, seed=42),
    ),
    PromptSubmitted("c-1", "p-2", "u-1", "", T),
    CancelRequested("c-1", "x-1", "u-1", T, response_id="r-1", device_id="phone"),
    CancelRequested("c-1", "x-2", "u-1", T),
    ResponseStarted(
        "c-1",
        "r-1",
        "p-1",
        "u-1",
        "Explain Kafka",
        "demo",
        T,
        "tab-1",
        GenerationParameters(max_tokens=3),
        attempt=0,
    ),
    TokenDelta("c-1", "r-1", 0, "Kafka", T),
    TokenDelta("c-1", "r-1", 1, " — 日本語, emoji 👩🏽‍💻, RTL עברית, NUL \x00 and \U0010ffff", T, attempt=2),
    TokenDelta("c-1", "r-1", 2, "", T),
    TokenDelta("c-1", "r-1", 3, "x" * (1024 * 1024), T),
    ResponseCompleted("c-1", "r-1", 3, T, "length", Usage(12, 3, 15)),
    ResponseCompleted("c-1", "r-2", -1, T),
    ResponseFailed("c-1", "r-3", 7, "provider_timeout", T, "no answer in 30s", retriable=True, attempt=1),
    ResponseCancelled("c-1", "r-4", 9, T, "x-1", "u-1", "phone", attempt=0),
    ResponseResumed("c-1", "r-5", 1, 41, ResumeMode.CONTINUE, T, "worker_lost"),
    ResponseResumed("c-1", "r-5", 2, -1, ResumeMode.RESTART, T),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips(record: Any) -> None:
    codec = PROMPTS if isinstance(record, PromptSubmitted | CancelRequested) else TOKENS
    value = codec.encode(record)
    assert value[:2] == MAGIC
    assert value[2:HEADER_SIZE] == codec.writer.fingerprint
    assert codec.decode(value) == record


def test_examples_cover_every_record_type() -> None:
    from schemas.records import PROMPT_TYPES, TOKEN_TYPES

    assert {type(r) for r in EXAMPLES} == set(PROMPT_TYPES) | set(TOKEN_TYPES)


@given(prompt_records)
def test_any_prompt_record_round_trips(record: Any) -> None:
    assert PROMPTS.decode(PROMPTS.encode(record)) == record


@given(token_events)
def test_any_token_event_round_trips(record: Any) -> None:
    assert TOKENS.decode(TOKENS.encode(record)) == record


def test_bytes_are_plain_avro_after_the_header() -> None:
    """Other teams decode with fastavro and the .avsc alone (timestamps as datetimes there)."""
    delta = TokenDelta("c-1", "r-1", 5, "hi", T, attempt=1)
    body = io.BytesIO(TOKENS.encode(delta)[HEADER_SIZE:])
    raw: Any = fastavro.schemaless_reader(
        body,
        fastavro.parse_schema(current("conversation.tokens").raw),
        None,
        return_record_name=True,
        return_record_name_override=True,
    )
    name, payload = raw["payload"]
    assert name == "dev.tokenlog.tokens.TokenDelta"
    assert payload["seq"] == 5
    assert int(payload["produced_at"].timestamp() * 1000) == T


def test_decode_errors_name_topic_partition_and_offset() -> None:
    with pytest.raises(DecodeError) as failure:
        TOKENS.decode(b"not avro at all", partition=3, offset=1042)
    assert (failure.value.topic, failure.value.partition, failure.value.offset) == (
        "conversation.tokens",
        3,
        1042,
    )
    assert "conversation.tokens[3]@1042" in str(failure.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"", "bad magic"),
        (MAGIC + b"\x00" * 3, "bad magic"),
        (b"\x00\x01" + b"\x00" * 20, "bad magic"),
    ],
)
def test_malformed_values_are_refused(value: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        TOKENS.decode(value)


def test_an_unknown_writer_schema_is_its_own_error() -> None:
    value = MAGIC + b"\xff" * 8 + b"\x00"
    with pytest.raises(UnknownSchemaError, match="unknown schema"):
        TOKENS.decode(value, partition=0, offset=1)


def test_truncated_and_trailing_bytes_are_refused() -> None:
    value = TOKENS.encode(TokenDelta("c-1", "r-1", 0, "hello", T))
    with pytest.raises(DecodeError, match="corrupt Avro body"):
        TOKENS.decode(value[:-3])
    with pytest.raises(DecodeError, match="trailing bytes"):
        TOKENS.decode(value + b"\x00")


def test_a_record_of_the_other_topic_is_refused() -> None:
    value = PROMPTS.encode(PromptSubmitted("c-1", "p-1", "u-1", "hi", T))
    with pytest.raises(UnknownSchemaError):
        TOKENS.decode(value)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_decode_error(junk: bytes) -> None:
    for value in (junk, MAGIC + TOKENS.writer.fingerprint + junk):
        with contextlib.suppress(DecodeError):
            TOKENS.decode(value)


@given(st.data())
def test_corrupting_any_byte_of_a_record_gives_a_record_or_a_decode_error(data: st.DataObject) -> None:
    value = bytearray(TOKENS.encode(data.draw(token_events)))
    index = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    value[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with contextlib.suppress(DecodeError):
        TOKENS.decode(bytes(value))


def test_encoding_something_else_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="not a tokenlog record"):
        TOKENS.encode("hello")  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="cannot encode TokenDelta"):
        TOKENS.encode(TokenDelta("c-1", "r-1", "zero", "x", T))  # type: ignore[arg-type]


def test_codec_for_knows_the_two_topics() -> None:
    assert codec_for("conversation.tokens") is TOKENS
    assert codec_for("conversation.prompts") is PROMPTS
    with pytest.raises(KeyError):
        codec_for("conversation.deadletter")


def test_python_types_mirror_the_current_schemas_field_for_field() -> None:
    from dataclasses import fields

    from schemas.records import PROMPT_TYPES, TOKEN_TYPES

    for topic, types in (("conversation.prompts", PROMPT_TYPES), ("conversation.tokens", TOKEN_TYPES)):
        branches = {b["name"]: b for b in current(topic).raw["fields"][1]["type"]}
        assert set(branches) == {cls.__name__ for cls in types}, topic
        for cls in types:
            schema_fields = {f["name"] for f in branches[cls.__name__]["fields"]}
            python_fields = {f.name for f in fields(cls)} - {"conversation_id"}
            assert schema_fields == python_fields, cls.__name__


def test_a_decode_error_carries_everything_a_dead_letter_needs() -> None:
    from schemas.codec import deadletter_headers

    with pytest.raises(UnknownSchemaError) as failure:
        TOKENS.decode(MAGIC + b"\x01" * 8 + b"\x00", partition=7, offset=99)
    headers = dict(deadletter_headers(failure.value))
    assert headers["tokenlog.origin.topic"] == b"conversation.tokens"
    assert headers["tokenlog.origin.partition"] == b"7"
    assert headers["tokenlog.origin.offset"] == b"99"
    assert headers["tokenlog.error.reason"] == b"unknown_schema"
