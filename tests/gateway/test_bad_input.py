"""Bad input against the running system: schemathesis over the gateway's OpenAPI document,
hypothesis-made WebSocket frames and SSE resume headers, malformed records on the topics. Each gets
a clear, typed answer; every process keeps serving; no accepted prompt or stored token is lost."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import schemathesis
import websockets
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from gateway.client import Client
from gateway.errors import RULES
from gateway.wire import SSEDecoder
from infra.broker import cluster_metadata
from infra.topics import describe
from schemas.cursor import Cursor, parse
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC
from tests.gateway.stack import GatewayProc, Stack, offset_of, partition_of
from tests.harness import SERVICE_HEADERS, unique, wait_for
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration

CODES = frozenset(RULES)
"""Every error code the gateway may answer with (errors.py's table)."""
MAX_FRAME = 64 * 1024
"""The gateway's default WebSocket frame limit (TOKENLOG_GATEWAY_MAX_WS_FRAME_BYTES)."""
EVERY_ROUTE = (
    "POST /v1/conversations/{cid}/prompts",
    "POST /v1/conversations/{cid}/cancel",
    "GET /v1/conversations/{cid}",
    "GET /v1/conversations/{cid}/events",
    "GET /v1/conversations/{cid}/ws",
    "POST /api/chat",
    "GET /api/chat/{cid}/stream",
    "POST /v1/dev/token",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
)
NO_INPUT = ("GET /healthz", "GET /readyz", "GET /metrics")
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
"""No 5xx; only statuses, media types and bodies the OpenAPI document declares for the operation
(every error there is the typed ``ErrorBody``, its code one of the table's)."""
REJECTED = (400, 404, 413)
"""What invalid input gets: ``invalid_request``/``invalid_cursor``, ``not_found`` (an id with a
``/`` names no route), ``payload_too_large``."""


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_answers_generated_requests_as_its_openapi_document_says(
    stack: Stack, gw: GatewayProc, mode: GenerationMode
) -> None:
    """schemathesis over every operation, the streaming ones too (each stream is read up to its
    first event, within the request timeout), as a real user: valid requests (positive) and
    requests that break the document (negative: each must be refused with a typed 4xx)."""
    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
    schema.config.max_stream_events = 1
    schema.config.checks.negative_data_rejection.expected_statuses = [str(s) for s in REJECTED]
    headers = {"Authorization": f"Bearer {stack.token(unique('fuzz-user'))}"}
    results = list(schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), "the OpenAPI document has an invalid operation"
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert sorted(op.label for op in operations) == sorted(EVERY_ROUTE)
    checks = CONFORMANCE + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    statuses: Counter[int] = Counter()
    takes_input = [op for op in operations if op.label not in NO_INPUT]  # nothing to break there
    for operation in takes_input if mode is GenerationMode.NEGATIVE else operations:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=checks, timeout=10)
            statuses[response.status_code] += 1
            if response.status_code >= 400:
                assert response.json()["error"]["code"] in CODES, response.text

        call()
    print(
        f"schemathesis {mode}: {sum(statuses.values())} requests over {len(operations)} operations:",
        dict(statuses),
    )
    assert sum(statuses.values()) >= 5 * len(takes_input)
    if mode is GenerationMode.NEGATIVE:
        assert set(statuses) >= {400}, "invalid input was generated and refused"
    assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200


# ------------------------------------------------------------------ POST /api/chat bodies


def _chat(cid: str, *messages: dict[str, Any]) -> dict[str, Any]:
    return {"id": cid, "messages": list(messages), "trigger": "submit-message"}


def _user(text: Any, *, mid: Any = "m-1", parts: Any = None) -> dict[str, Any]:
    return {
        "role": "user",
        "id": mid,
        "parts": parts if parts is not None else [{"type": "text", "text": text}],
    }


BAD_CHATS: dict[str, tuple[bytes | dict[str, Any] | list[Any], int, str]] = {
    "not JSON": (b"{not json", 400, "invalid_request"),
    "JSON, not an object": ([1, 2], 400, "invalid_request"),
    "no id": ({"messages": [_user("hi")]}, 400, "invalid_request"),
    "id not a string": ({"id": 5, "messages": [_user("hi")]}, 400, "invalid_request"),
    "bad id": (_chat("has space", _user("hi")), 400, "invalid_request"),
    "id too long": (_chat("x" * 129, _user("hi")), 400, "invalid_request"),
    "no messages": ({"id": "c-1"}, 400, "invalid_request"),
    "messages not a list": ({"id": "c-1", "messages": "hi"}, 400, "invalid_request"),
    "no user message": (
        _chat("c-1", {"role": "assistant", "id": "a-1", "parts": []}),
        400,
        "invalid_request",
    ),
    "a user message without text": (_chat("c-1", _user("")), 400, "invalid_request"),
    "only a file part": (
        _chat("c-1", _user(None, parts=[{"type": "file", "url": "data:,x", "mediaType": "text/plain"}])),
        400,
        "invalid_request",
    ),
    "message without an id": (
        _chat("c-1", {"role": "user", "parts": [{"type": "text", "text": "hi"}]}),
        400,
        "invalid_request",
    ),
    "message id not a string": (_chat("c-1", _user("hi", mid=7)), 400, "invalid_request"),
    "parts not a list": (_chat("c-1", _user(None, parts={"type": "text"})), 400, "invalid_request"),
    "a part not an object": (_chat("c-1", _user(None, parts=["hi"])), 400, "invalid_request"),
    "a part without a type": (_chat("c-1", _user(None, parts=[{"text": "hi"}])), 400, "invalid_request"),
    "text not a string": (_chat("c-1", _user(5)), 400, "invalid_request"),
    "text a list": (_chat("c-1", _user(["h", "i"])), 400, "invalid_request"),
    "a marker over its cap": (_chat("c-1", _user("hi [[tokens=99999999]]")), 400, "invalid_marker"),
    "text over the prompt limit": (_chat("c-1", _user("x" * (32 * 1024 + 1))), 413, "payload_too_large"),
    "body over the body limit": (_chat("c-1", _user("x" * (70 * 1024))), 413, "payload_too_large"),
}
"""Each bad ``useChat`` body, the status and the code it gets (README: Vercel AI SDK, Errors)."""


@pytest.mark.parametrize("name", sorted(BAD_CHATS))
def test_a_bad_chat_body_gets_its_typed_4xx_and_nothing_is_written(
    stack: Stack, gw: GatewayProc, name: str
) -> None:
    body, status, code = BAD_CHATS[name]
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    auth = {"Authorization": f"Bearer {stack.token(unique('chat-user'))}", "Content-Type": "application/json"}
    response = httpx.post(f"{gw.url}/api/chat", content=content, headers=auth, timeout=30)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text[:300]
    assert set(response.json()["error"]) >= {"code", "message", "action"}
    assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200


def test_a_chat_without_a_token_gets_401_and_another_users_chat_403(stack: Stack, gw: GatewayProc) -> None:
    cid = unique("chat")
    owner = {"Authorization": f"Bearer {stack.token('chat-owner')}"}
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        mine = http.post(
            f"/v1/conversations/{cid}/prompts", json={"text": "mine [[tokens=2]] [[rate=0]]"}, headers=owner
        )
        assert mine.status_code == 202, mine.text
        body = _chat(cid, _user("let me in"))
        refused = {
            "no token": http.post("/api/chat", json=body),
            "bad token": http.post("/api/chat", json=body, headers={"Authorization": "Bearer not.a.token"}),
            "another user": http.post(
                "/api/chat", json=body, headers={"Authorization": f"Bearer {stack.token('chat-stranger')}"}
            ),
            "resume, no token": http.get(f"/api/chat/{cid}/stream"),
            "resume, another user": http.get(
                f"/api/chat/{cid}/stream", headers={"Authorization": f"Bearer {stack.token('chat-stranger')}"}
            ),
            "resume, bad id": http.get("/api/chat/has%20space/stream", headers=owner),
        }
    got = {name: (r.status_code, r.json()["error"]["code"]) for name, r in refused.items()}
    assert got == {
        "no token": (401, "unauthorized"),
        "bad token": (401, "unauthorized"),
        "another user": (403, "forbidden"),
        "resume, no token": (401, "unauthorized"),
        "resume, another user": (403, "forbidden"),
        "resume, bad id": (400, "invalid_request"),
    }


# ------------------------------------------------------------------ WebSocket frames

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FRAMES = st.one_of(
    st.binary(max_size=200),  # raw bytes, invalid UTF-8 among them
    st.text(max_size=200),  # not JSON
    JSON_VALUES.map(json.dumps),  # JSON (huge integers, Infinity too), but not an object
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "prompt", "cancel", "ping", "nope"]) | st.text(max_size=5)},
        optional={
            "cursor": st.text(max_size=40) | st.integers() | st.just("e:0:1"),
            "ref": st.text(max_size=80) | st.integers(),
            "body": JSON_VALUES,
            "id": JSON_VALUES,
        },
    ).map(json.dumps),
    st.integers(65 * 1024, 80 * 1024).map(lambda n: '{"type":"ping","id":"' + "x" * n + '"}'),  # too large
)


STAYS_OPEN_ERRORS = frozenset({"invalid_frame", "invalid_request", "invalid_cursor", "unknown_conversation"})
"""What a bad frame that leaves the socket open is answered with (a cancel that parses finds no
answer to cancel in a new conversation)."""


def _frame_type(frame: str | bytes) -> object:
    try:
        parsed = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return parsed.get("type") if isinstance(parsed, dict) else None


def _allowed_closes(frame: str | bytes) -> frozenset[int]:
    """The close codes the socket may end with after ``frame`` (README: a failed subscribe and an
    oversized frame close it; any other bad frame gets an error frame and the socket serves on)."""
    if len(frame) > MAX_FRAME:
        return frozenset({1009})
    if _frame_type(frame) == "subscribe":
        return frozenset({4400})  # a cursor that is not a cursor
    return frozenset()


async def _one_bad_frame(gw: GatewayProc, token: str, frame: str | bytes) -> None:
    url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{unique('fz')}/ws?access_token={token}"
    allowed = _allowed_closes(frame)
    async with websockets.connect(url, compression=None, max_size=2**22) as ws:
        try:
            await ws.send(frame)
            await ws.send('{"type":"ping","id":"after"}')
            async with asyncio.timeout(10):
                async for message in ws:
                    reply = orjson.loads(message)
                    if reply["type"] == "error":
                        assert reply["code"] in STAYS_OPEN_ERRORS | {"payload_too_large"}, reply
                    elif reply["type"] == "pong" and reply.get("id") == "after":
                        return  # answered, and the socket still serves
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            oversized_reset = code == 1006 and len(frame) > MAX_FRAME  # see below
            assert code in allowed or oversized_reset, f"closed with {code}, expected one of {set(allowed)}"
            return
        except ConnectionResetError:
            # Over the frame limit the server closes (1009) while the client is still sending the
            # frame's rest: the kernel answers that with a reset, which may overtake the close.
            assert len(frame) > MAX_FRAME, "only an oversized frame may end in a reset"
            return
        raise AssertionError("the socket closed without a close code")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=FRAMES)
def test_any_websocket_frame_gets_a_typed_error_or_an_answer_and_the_gateway_keeps_serving(
    stack: Stack, gw: GatewayProc, frame: str | bytes
) -> None:
    asyncio.run(_one_bad_frame(gw, stack.token(unique("fuzz-ws")), frame))  # no user's frame budget shared
    assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200


def test_a_ping_is_answered_and_never_closes_the_socket(stack: Stack, gw: GatewayProc) -> None:
    """The close-code rule above, checked on the frame that must never close anything."""
    assert _allowed_closes('{"type":"ping","id":1}') == frozenset()
    asyncio.run(_one_bad_frame(gw, stack.token(unique("fuzz-ws")), '{"type":"ping","id":1}'))


# ------------------------------------------------------------------ SSE resume parameters

HEARTBEAT_S = 1
"""The fuzzed gateway's SSE heartbeat: a stream with nothing to send shows it is open."""


@dataclass(frozen=True)
class Known:
    """A conversation of the SSE fuzz user that really has events in the log."""

    cid: str
    partition: int
    epoch: str
    offsets: tuple[int, ...]


@pytest.fixture(scope="module")
def sse_gw(stack: Stack) -> GatewayProc:
    return stack.start_gateway("gateway-sse-fuzz", {"TOKENLOG_GATEWAY_HEARTBEAT_S": str(HEARTBEAT_S)})


@pytest.fixture(scope="module")
def known(stack: Stack, sse_gw: GatewayProc) -> Known:
    cid = unique("fz-known")

    async def go() -> Known:
        async with Client(sse_gw.url, stack.token("fuzz-sse")) as client:
            accepted = await client.prompt(cid, "Known [[tokens=5]] [[rate=0]]", prompt_id="p-1")
        transcript = await read_transcript(
            stack.bootstrap, accepted["partition"], [cid], all_finished(["p-1"])
        )
        metadata = await cluster_metadata(stack.bootstrap, timeout_s=30)
        offsets = tuple(o for o, _ in transcript.events)
        return Known(cid, accepted["partition"], str(metadata["cluster_id"]), offsets)

    found = asyncio.run(go())
    assert len(found.offsets) >= 7  # started, 5 tokens, completed
    return found


WHERE = ("Last-Event-ID", "cursor", "lastEventId")
"""The three places a stream's resume position is read from, in that order."""


def _values(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=60),
        st.text(alphabet="\r\n:.1abc0123", max_size=20),  # CR/LF splitting the header; cursor-like
        st.builds(
            lambda e, p, o: f"{e}:{p}:{o}", st.text(max_size=10), st.integers(-5, 99), st.integers(-5, 10**12)
        ),
        st.builds(  # well formed: this epoch or another, any partition, any offset (the known ones too)
            lambda e, p, o: f"1.{e}.{p}.{o}",
            st.sampled_from([known.epoch, "another-epoch"]),
            st.sampled_from([known.partition, known.partition + 1, 10**6]),
            st.sampled_from(known.offsets) | st.integers(-1, 10**12),
        ),
        st.sampled_from(["beginning", "now", "", "x" * 200]),
    )


async def _raw_sse(
    gw: GatewayProc,
    token: str,
    cid: str,
    value: str,
    *,
    where: str = "Last-Event-ID",
    first_event: bool = False,
) -> tuple[int, bytes]:
    """A raw request (an HTTP client refuses to send CR/LF in a header; an attacker does not)
    with ``value`` as the ``Last-Event-ID`` header or the query parameter ``where``; the status
    and the first bytes of the body (with ``first_event``: up to the first event or heartbeat)."""
    host, port = gw.url.removeprefix("http://").split(":")
    raw = value.encode("utf-8", "surrogatepass")
    query = "" if where == "Last-Event-ID" else f"?{where}={quote(raw, safe='')}"
    header = b"Last-Event-ID: " + raw + b"\r\n" if where == "Last-Event-ID" else b""
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        request = (
            (
                f"GET /v1/conversations/{quote(cid, safe='')}/events{query} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {token}\r\n"
            ).encode()
            + header
            + b"\r\n"
        )
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            body = await reader.read(4096)
            while first_event and status == 200 and not _settled(body):
                more = await reader.read(4096)
                if not more:
                    break
                body += more
        return status, body
    finally:
        writer.close()


def _heartbeats(body: bytes) -> int:
    return body.count(b"event: heartbeat")


def _settled(body: bytes) -> bool:
    """The stream's first event other than a heartbeat is in ``body``, or two heartbeats are (the
    one a stream opens with, then one of idleness: nothing to send)."""
    return _first_event(body, complete=False) is not None or _heartbeats(body) >= 2


def _first_event(body: bytes, *, complete: bool = True) -> tuple[str, dict[str, Any]] | None:
    """The kind and data of the first event of an SSE body other than a heartbeat (None: only
    heartbeats; with ``complete``, there must be one)."""
    for kind, _, data in SSEDecoder().feed(body):
        if kind != "heartbeat":
            return kind, orjson.loads(data)
    if complete:
        assert _heartbeats(body) > 0, body[:300]
    return None


@settings(max_examples=90, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), where=st.sampled_from(WHERE), is_known=st.booleans())
def test_any_resume_position_gets_events_a_resync_or_a_typed_400_never_a_server_error(  # noqa: PLR0917
    stack: Stack, sse_gw: GatewayProc, known: Known, data: st.DataObject, where: str, is_known: bool
) -> None:
    """Fuzz ``Last-Event-ID``, ``?cursor=`` and ``?lastEventId=``, on a new conversation or one
    with events: a stream that opens with a snapshot, a resync or the log's events after the
    cursor (or, for a cursor at the end, only heartbeats), else 400 with the typed body."""
    value = data.draw(_values(known), label="value")
    cid = known.cid if is_known else unique("fz")
    status, body = asyncio.run(
        _raw_sse(sse_gw, stack.token("fuzz-sse"), cid, value, where=where, first_event=True)
    )
    assert status in (200, 400), (status, body[:200])
    if status == 400:
        if where != "Last-Event-ID" or body.startswith(b"{"):  # a split header is refused before the app
            assert orjson.loads(body)["error"]["code"] in ("invalid_cursor", "invalid_request"), body
    else:
        first = _first_event(body)
        if first is None:  # nothing to send: only a position with no event after it
            parse(value)  # a position (a cursor, beginning, now), not a stream that opened on nothing
        else:
            kind, event = first
            assert kind in ("snapshot", "resync") or kind == event["type"], (kind, event)
            if kind not in ("snapshot", "resync"):  # resumed: the log's next event of this conversation
                assert is_known
                assert event["conversation_id"] == cid
                assert offset_of(event["cursor"]) in known.offsets
    assert httpx.get(f"{sse_gw.url}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize("cid", ["bad id", "x" * 129, "-leading-dash", "a%2Fb", "é"])
def test_a_bad_conversation_id_on_the_sse_route_gets_a_typed_400_or_404(
    stack: Stack, sse_gw: GatewayProc, cid: str
) -> None:
    response = httpx.get(
        f"{sse_gw.url}/v1/conversations/{quote(cid, safe='%')}/events",
        headers={"Authorization": f"Bearer {stack.token('fuzz-sse')}"},
        timeout=10,
    )
    assert (response.status_code, response.json()["error"]["code"]) in (
        (400, "invalid_request"),
        (404, "not_found"),  # a decoded "/" names no route
    ), response.text


def test_a_cursor_of_another_conversation_epoch_or_partition_gets_a_resync_not_its_events(
    stack: Stack, gw: GatewayProc
) -> None:
    """Foreign cursors: the other epoch, the other partition, far beyond the end."""
    cid = unique("fz")
    partition = partition_of(cid)

    async def go() -> list[str]:
        kinds = []
        for cursor in (
            Cursor("another-cluster", partition, 5).format(),
            Cursor(gw_epoch, (partition + 1) % partitions, 5).format(),
            Cursor(gw_epoch, partition, 10**12).format(),
        ):
            status, body = await _raw_sse(gw, stack.token("fuzz-sse"), cid, cursor, first_event=True)
            assert status == 200, body
            first = _first_event(body)
            kinds.append(first[0] if first is not None else "")
        return kinds

    gw_epoch = str(asyncio.run(cluster_metadata(stack.bootstrap, timeout_s=30))["cluster_id"])
    partitions = asyncio.run(describe(stack.bootstrap, [TOKENS_TOPIC]))[TOKENS_TOPIC].partitions
    assert set(asyncio.run(go())) == {"resync"}


# ------------------------------------------------------------------ malformed records


async def _garbage(bootstrap: str, cid: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        key, partition = cid.encode(), partition_of(cid)
        for value in (b"\x00\x01garbage", b"", b"\xff" * 40, b'{"json": "is not avro"}'):
            await producer.send_and_wait(PROMPTS_TOPIC, value, key=key, partition=partition)
            await producer.send_and_wait(TOKENS_TOPIC, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_malformed_records_on_both_topics_are_skipped_and_the_next_prompt_is_answered_and_streamed(
    stack: Stack, gw: GatewayProc
) -> None:
    cid = unique("fz")
    undecodable = gw.metric("tokenlog_gateway_undecodable_records_total")
    asyncio.run(_garbage(stack.bootstrap, cid))

    async def go() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with Client(gw.url, stack.token("fuzz-records")) as client:
            follower = client.follow(
                cid, transport="sse", cursor="beginning"
            )  # every event, however late it opens
            accepted = await client.prompt(
                cid, "After the garbage [[tokens=20]] [[rate=100]]", prompt_id="p-1"
            )
            await follower.once(until=lambda f: f.get("type") == "response.completed", timeout_s=60)
            return accepted, follower.received

    accepted, frames = asyncio.run(go())
    transcript = asyncio.run(
        read_transcript(stack.bootstrap, accepted["partition"], [cid], all_finished(["p-1"]))
    )
    text = "".join(f["text"] for f in frames if f.get("type") == "token")
    assert text == transcript.by_prompt()["p-1"].text
    assert len(transcript.undecodable) == 4  # the garbage is still in the log, untouched
    assert gw.metric("tokenlog_gateway_undecodable_records_total") >= undecodable + 4

    async def snapshot_turns() -> list[str]:  # the session app applies the answer too (it may trail)
        turns: list[str] = []

        async def has_turn() -> bool:
            nonlocal turns
            async with httpx.AsyncClient(timeout=10) as http:
                body = (
                    await http.get(f"{stack.sessions_url}/sessions/{cid}", headers=SERVICE_HEADERS)
                ).json()
            turns = [t["answer"] for t in body.get("turns", ())]
            return bool(turns)

        await wait_for(has_turn, timeout_s=60, interval_s=0.2)
        return turns

    assert asyncio.run(snapshot_turns()) == [text]
