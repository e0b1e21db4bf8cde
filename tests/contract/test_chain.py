"""The hash chain's content: sliced from a v2 record it equals the v1 encoding, for every event."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import fastavro
from hypothesis import given
from hypothesis import strategies as st

from schemas.chain import GENESIS, content, content_of, intact, seal, seal_encoded
from schemas.codec import MAGIC, TOKENS
from schemas.records import to_avro
from schemas.registry import TOKENS_TOPIC, history, schema_fingerprint
from tests.contract.strategies import token_events

prev_hashes = st.one_of(st.just(GENESIS), st.binary(min_size=32, max_size=32))


# Past 63 bytes a prev_hash's length takes two varint bytes, past 8191 three.
any_prev_hashes = st.one_of(prev_hashes, st.binary(min_size=60, max_size=9000))


@given(event=token_events, prev=any_prev_hashes)
def test_a_v2_records_chain_content_is_its_v1_encoding(event: Any, prev: bytes) -> None:
    sealed = seal(event, prev)
    value = TOKENS.encode(sealed)
    assert content_of(value, sealed) == content(sealed)
    assert intact(TOKENS.decode(value), value)


@given(event=token_events, prev=any_prev_hashes)
def test_sealing_and_encoding_at_once_writes_what_sealing_then_encoding_writes(
    event: Any, prev: bytes
) -> None:
    sealed, value = seal_encoded(event, prev)
    assert sealed == seal(event, prev)
    assert value == TOKENS.encode(sealed)


@given(event=token_events, prev=prev_hashes)
def test_a_changed_record_is_not_intact_when_verified_on_its_bytes(event: Any, prev: bytes) -> None:
    sealed = seal(event, prev)
    forged = dataclasses.replace(sealed, response_id=sealed.response_id + "x")
    value = TOKENS.encode(forged)
    assert not intact(TOKENS.decode(value), value)


@given(event=token_events)
def test_records_written_with_v1_have_no_chain_and_fall_back_to_encoding(event: Any) -> None:
    v1 = history(TOKENS_TOPIC)[0]
    buf = io.BytesIO()
    buf.write(MAGIC + schema_fingerprint(v1.raw))
    fastavro.schemaless_writer(buf, v1.parsed, to_avro(event))
    decoded = TOKENS.decode(buf.getvalue())
    assert (decoded.prev_hash, decoded.hash) == (b"", b"")
    assert content_of(buf.getvalue(), decoded) == content(decoded) == buf.getvalue()[10:]
