"""The project's codec registered with Faust, so the Faust app reads and writes the same bytes
as every other producer and consumer (single-object Avro, decoded into ``schemas.records``).

Use ``value_serializer=PROMPTS_CODEC`` / ``TOKENS_CODEC`` on Faust topics (``value_type=None``:
values are the project's dataclasses, not Faust Records, so no ``__faust`` metadata key ever
reaches Avro). Importing this module registers the codecs.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from schemas.codec import PROMPTS, TOKENS, TopicCodec

PROMPTS_CODEC = "tokenlog.prompts"
"""Faust codec name for ``conversation.prompts``."""
TOKENS_CODEC = "tokenlog.tokens"
"""Faust codec name for ``conversation.tokens``."""


class AvroTopicCodec(codecs.Codec):
    """A Faust codec delegating to one topic's ``TopicCodec``."""

    def __init__(self, topic_codec: TopicCodec[Any] | None = None, **kwargs: Any) -> None:
        self.topic_codec = topic_codec or kwargs.pop("_topic_codec")
        super().__init__(_topic_codec=self.topic_codec, **kwargs)

    def _dumps(self, obj: Any) -> bytes:
        return self.topic_codec.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self.topic_codec.decode(s)


def register() -> None:
    """Register both codecs with Faust (idempotent)."""
    codecs.register(PROMPTS_CODEC, AvroTopicCodec(PROMPTS))
    codecs.register(TOKENS_CODEC, AvroTopicCodec(TOKENS))


register()
