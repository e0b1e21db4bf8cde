"""Wire encoding, token checks, limits and the error table, without sockets."""

from __future__ import annotations

import re
import time
from pathlib import Path

import jwt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth import TokenService, bearer
from gateway.entry import entry_of
from gateway.errors import RULES, InvalidFrame, PayloadTooLarge, RateLimited, TooManyConnections, Unauthorized
from gateway.limits import ConnectionCounter, RateLimiter
from gateway.models import PromptBody
from gateway.wire import SSEDecoder, parse_client_frame, record_of, sse_comment, sse_event, sse_retry
from schemas.records import ResponseCompleted, ResponseResumed, ResponseStarted, ResumeMode, TokenDelta, Usage

SECRET = "s" * 64
EVENTS = [
    ResponseStarted("c", "r", "p", "u", "prompt\nwith newline", "m", 1, "d", attempt=2),
    TokenDelta("c", "r", 0, 'text with "quotes"\n\u2028 and émoji 🚀', 3, 2),
    ResponseResumed("c", "r", 3, 0, ResumeMode.RESTART, 4, "worker_lost"),
    ResponseCompleted("c", "r", 0, 5, "stop", Usage(1, 2, 3), 3),
]


@pytest.mark.parametrize("event", EVENTS)
def test_an_event_frame_carries_type_cursor_and_every_field_and_reads_back(event: object) -> None:
    entry = entry_of(event, epoch="ep", partition=2, offset=41)  # type: ignore[arg-type]
    frame = orjson.loads(entry.json)
    assert frame["cursor"] == "1.ep.2.41"
    assert record_of(frame) == event
    decoder = SSEDecoder()
    [(kind, last_id, data)] = decoder.feed(entry.sse)
    assert kind == frame["type"]
    assert last_id == "1.ep.2.41"
    assert orjson.loads(data) == frame


@given(st.lists(st.binary(min_size=0, max_size=40), max_size=30))
def test_the_sse_decoder_gets_the_same_events_however_the_bytes_are_split(cuts: list[bytes]) -> None:
    stream = (
        sse_retry(1500)
        + sse_comment("hi")
        + b"".join(sse_event(orjson.dumps({"n": i}), event="token", id=f"1.e.0.{i}") for i in range(5))
    )
    sizes = [max(1, len(c)) for c in cuts] or [len(stream)]
    decoder, got, at, i = SSEDecoder(), [], 0, 0
    while at < len(stream):
        size = sizes[i % len(sizes)]
        got += decoder.feed(stream[at : at + size])
        at, i = at + size, i + 1
    assert [orjson.loads(d)["n"] for _, _, d in got] == list(range(5))
    assert decoder.retry_ms == 1500
    assert decoder.last_event_id == "1.e.0.4"


def test_sse_refuses_an_id_with_cr_or_lf() -> None:
    with pytest.raises(ValueError, match="CR"):
        sse_event(b"{}", id="1.e.0.1\nevent: evil")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", InvalidFrame),
        (b"[1,2]", InvalidFrame),
        (b'{"type":"launch"}', InvalidFrame),
        (b'{"type":"subscribe","cursor":7}', InvalidFrame),
        (b'{"type":"subscribe","extra":1}', InvalidFrame),
        (b'{"type":"prompt"}', InvalidFrame),
        (b'{"type":"prompt","text":"x","prompt_id":"bad id"}', InvalidFrame),
        (b'{"type":"ping","ref":' + b'"' + b"x" * 65 + b'"}', InvalidFrame),
        (b"\xff\xfe", InvalidFrame),
        (b'{"type":"ping","pad":"' + b"x" * 70_000 + b'"}', PayloadTooLarge),
    ],
)
def test_bad_websocket_frames_get_typed_errors(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_client_frame(raw, max_bytes=65_536)


def test_good_websocket_frames_parse() -> None:
    assert parse_client_frame('{"type":"subscribe","cursor":null,"ref":"a"}', max_bytes=1000) == {
        "type": "subscribe",
        "ref": "a",
        "cursor": None,
    }
    prompt = parse_client_frame('{"type":"prompt","text":"hi","prompt_id":"p-1"}', max_bytes=1000)
    assert prompt["body"] == PromptBody(text="hi", prompt_id="p-1")


def test_tokens_expire_and_refuse_tampering_other_keys_and_other_algorithms() -> None:
    tokens = TokenService(SECRET, 60)
    assert tokens.verify(tokens.issue("alice")).user_id == "alice"
    now = int(time.time())
    claims = {"sub": "alice", "iss": "tokenlog", "iat": now, "exp": now + 60}
    for bad in (
        tokens.issue("alice", ttl_s=-1),
        tokens.issue("alice")[:-3] + "abc",
        jwt.encode(claims, "another-secret-that-is-long-enough!!", algorithm="HS256"),
        jwt.encode(claims, SECRET, algorithm="HS384"),
        jwt.encode(claims, None, algorithm="none"),
        jwt.encode({**claims, "iss": "someone-else"}, SECRET, algorithm="HS256"),
        jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET, algorithm="HS256"),
        None,
        "",
    ):
        with pytest.raises(Unauthorized):
            tokens.verify(bad)


def test_the_bearer_comes_from_the_header_first_and_a_bad_scheme_is_refused() -> None:
    assert bearer("Bearer abc", "query") == "abc"
    assert bearer(None, "query") == "query"
    with pytest.raises(Unauthorized):
        bearer("Basic abc", None)


def test_the_prompt_rate_limit_refills_and_connections_are_capped() -> None:
    limiter = RateLimiter(per_min=60, burst=2)
    limiter.take("u", now=0)
    limiter.take("u", now=0)
    with pytest.raises(RateLimited) as limited:
        limiter.take("u", now=0.5)
    assert limited.value.details["retry_after_s"] > 0
    limiter.take("u", now=2.0)
    limiter.take("v", now=0)
    counter = ConnectionCounter(cap=1)
    counter.acquire("u")
    with pytest.raises(TooManyConnections):
        counter.acquire("u")
    counter.release("u")
    counter.acquire("u")


def test_the_readme_error_table_is_the_codes_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d+|—) \| (\d+) \| (\w+) \|", readme, re.MULTILINE)
    documented = {code: (status, int(close), action) for code, status, close, action in rows}
    expected = {
        r.code: (str(r.status) if r.status else "—", r.close_code, r.action.value) for r in RULES.values()
    }
    assert documented == expected
