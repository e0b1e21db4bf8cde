"""The wire codec of tokenlog's topics: Avro single-object encoding with fastavro.

A value is ``0xC3 0x01`` + the writer schema's 8-byte fingerprint + Avro binary. A consumer
finds the writer schema by fingerprint among the versions it knows (``schemas/history``) and
resolves it to its current schema, so records written by older producers stay readable.

Decoding never crashes a consumer loop and never drops a record in silence: every failure is a
``DecodeError`` carrying the topic, partition and offset; the caller decides whether to skip and
count it or to send it to ``conversation.deadletter``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import fastavro

from schemas.errors import DecodeError, EncodeError, UnknownSchemaError
from schemas.records import PromptRecord, Record, TokenEvent, from_avro, to_avro
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC, SchemaVersion, by_fingerprint, current

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

R = TypeVar("R", bound=Record)


@dataclass
class TopicCodec(Generic[R]):
    """Encodes and decodes the records of one topic."""

    topic: str
    writer: SchemaVersion = field(init=False, repr=False)
    known: dict[bytes, SchemaVersion] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.writer = current(self.topic)
        self.known = by_fingerprint(self.topic)
        self._header = MAGIC + self.writer.fingerprint

    def encode(self, record: R) -> bytes:
        """Single-object encoding of ``record`` with the current schema."""
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            fastavro.schemaless_writer(buf, self.writer.parsed, to_avro(record))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise EncodeError(f"cannot encode {type(record).__name__} for {self.topic}: {exc}") from exc
        return buf.getvalue()

    def decode(self, value: bytes | None, *, partition: int = -1, offset: int = -1) -> R:
        """The record in ``value``; ``DecodeError`` (with where it was) on anything else."""
        where: dict[str, Any] = {"topic": self.topic, "partition": partition, "offset": offset}
        if value is None:
            raise DecodeError("record has no value (a tombstone?)", **where)
        if len(value) < HEADER_SIZE or value[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (bad magic or too short)", **where)
        fp = bytes(value[2:HEADER_SIZE])
        writer = self.known.get(fp)
        if writer is None:
            raise UnknownSchemaError(
                f"written with an unknown schema (fingerprint {fp.hex()}); this consumer's "
                "schemas are older than the producer's, or the record is not tokenlog's",
                **where,
            )
        reader = None if fp == self.writer.fingerprint else self.writer.parsed
        buf = io.BytesIO(value)
        buf.seek(HEADER_SIZE)
        try:
            envelope: Any = fastavro.schemaless_reader(
                buf, writer.parsed, reader, return_record_name=True, return_record_name_override=True
            )
        except Exception as exc:
            raise DecodeError(f"corrupt Avro body ({type(exc).__name__}: {exc})", **where) from exc
        if buf.tell() != len(value):
            raise DecodeError(f"{len(value) - buf.tell()} trailing bytes after the record", **where)
        if reader is not None:
            _bytes_defaults(envelope)
        try:
            # The fingerprint is one of this topic's schemas, so the record is one of its types.
            return cast(R, from_avro(envelope))
        except DecodeError as exc:
            raise DecodeError(str(exc), **where) from exc


def _bytes_defaults(envelope: Any) -> None:
    """fastavro fills a ``bytes`` field missing from an older writer with its JSON default, a
    ``str`` (Avro writes bytes defaults as code points 0-255): make them bytes again."""
    payload = envelope.get("payload")
    if isinstance(payload, tuple):
        fields = payload[1]
        for name in ("prev_hash", "hash"):
            if isinstance(fields.get(name), str):
                fields[name] = fields[name].encode("latin-1")


PROMPTS: TopicCodec[PromptRecord] = TopicCodec(PROMPTS_TOPIC)
"""Codec of ``conversation.prompts``."""
TOKENS: TopicCodec[TokenEvent] = TopicCodec(TOKENS_TOPIC)
"""Codec of ``conversation.tokens``."""


def codec_for(topic: str) -> TopicCodec[Any]:
    if topic == PROMPTS_TOPIC:
        return PROMPTS
    if topic == TOKENS_TOPIC:
        return TOKENS
    raise KeyError(f"no tokenlog codec for topic {topic!r}")


def deadletter_headers(error: DecodeError) -> list[tuple[str, bytes]]:
    """Kafka headers for a record sent unchanged to ``conversation.deadletter``: where it came
    from and why it could not be decoded."""
    return [
        ("tokenlog.origin.topic", error.topic.encode()),
        ("tokenlog.origin.partition", str(error.partition).encode()),
        ("tokenlog.origin.offset", str(error.offset).encode()),
        ("tokenlog.error.reason", error.reason.encode()),
        ("tokenlog.error.message", str(error).encode()[:1000]),
    ]
