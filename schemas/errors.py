"""One error root for the event contract; retriable vs terminal is a class attribute."""

from __future__ import annotations


class ContractError(Exception):
    """Root of every error raised by ``schemas``."""

    retriable: bool = False


class EncodeError(ContractError):
    """A record could not be encoded (a field of the wrong type, an unknown record class)."""


class DecodeError(ContractError):
    """A Kafka record's value could not be decoded.

    Carries where the record lives so the caller can skip and count it, or dead-letter it;
    decoding never crashes a consumer loop and never drops a record silently.
    """

    reason: str = "malformed"

    def __init__(self, message: str, *, topic: str = "", partition: int = -1, offset: int = -1) -> None:
        where = f" at {topic}[{partition}]@{offset}" if topic else ""
        super().__init__(f"{message}{where}")
        self.topic = topic
        self.partition = partition
        self.offset = offset


class UnknownSchemaError(DecodeError):
    """The record names a writer schema (by fingerprint) this consumer does not know:
    written by a newer producer, or not by tokenlog at all. Upgrade the consumer's schemas."""

    reason = "unknown_schema"


class CursorError(ContractError):
    """A cursor cannot be used. ``reason`` says why, in words a client can act on:

    - ``malformed``: not a cursor at all (or a cursor format this server does not know);
    - ``epoch_changed``: the log it points into was reset or recreated;
    - ``wrong_partition``: it points into a partition that does not hold this conversation.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
