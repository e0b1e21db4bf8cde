"""Faust reads and writes exactly the bytes every other client does."""

from __future__ import annotations

from faust.serializers import codecs

from schemas.codec import PROMPTS, TOKENS
from schemas.faust_codec import PROMPTS_CODEC, TOKENS_CODEC
from schemas.records import CancelRequested, TokenDelta


def test_faust_codecs_produce_the_project_bytes_and_read_them_back() -> None:
    delta = TokenDelta("c-1", "r-1", 3, "héllo", 1_795_000_000_000, attempt=1)
    cancel = CancelRequested("c-1", "x-1", "u-1", 1_795_000_000_000)
    assert codecs.dumps(TOKENS_CODEC, delta) == TOKENS.encode(delta)
    assert codecs.loads(TOKENS_CODEC, TOKENS.encode(delta)) == delta
    assert codecs.dumps(PROMPTS_CODEC, cancel) == PROMPTS.encode(cancel)
    assert codecs.loads(PROMPTS_CODEC, PROMPTS.encode(cancel)) == cancel


def test_faust_clones_of_the_codec_keep_working() -> None:
    """Faust clones codecs when it chains them; a clone must keep its topic codec."""
    clone = codecs.get_codec(TOKENS_CODEC).clone()
    delta = TokenDelta("c-1", "r-1", 0, "x", 1)
    assert clone.loads(clone.dumps(delta)) == delta
