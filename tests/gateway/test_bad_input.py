"""Bad input against the running system: schemathesis over the gateway's OpenAPI document,
hypothesis-made WebSocket frames and SSE resume headers, malformed records on the topics. Each gets
a clear, typed answer; every process keeps serving; no accepted prompt or stored token is lost."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

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
from infra.broker import cluster_metadata
from infra.settings import TopicSettings
from schemas.cursor import Cursor
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC
from tests.gateway.stack import GatewayProc, Stack, partition_of
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


async def _one_bad_frame(gw: GatewayProc, token: str, frame: str | bytes) -> None:
    url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{unique('fz')}/ws?access_token={token}"
    async with websockets.connect(url, compression=None, max_size=2**22) as ws:
        try:
            await ws.send(frame)
            await ws.send('{"type":"ping","id":"after"}')
            async with asyncio.timeout(10):
                async for message in ws:
                    reply = orjson.loads(message)
                    if reply["type"] == "error":
                        assert reply["code"] in CODES, reply
                    elif reply["type"] == "pong" and reply.get("id") == "after":
                        return  # answered, and the socket still serves
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            oversized_reset = code == 1006 and len(frame) > MAX_FRAME  # see below
            assert code in (1007, 1008, 1009) or 4000 <= code < 5000 or oversized_reset, f"closed with {code}"
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
    asyncio.run(_one_bad_frame(gw, stack.token("fuzz-ws"), frame))
    assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200


# ------------------------------------------------------------------ SSE resume headers

HEADERS = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="\r\n:abc0123", max_size=20),  # CR/LF splitting the header
    st.builds(
        lambda e, p, o: f"{e}:{p}:{o}", st.text(max_size=10), st.integers(-5, 99), st.integers(-5, 10**12)
    ),
    st.just("x" * 200),
)


async def _raw_sse(
    gw: GatewayProc, token: str, cid: str, last_event_id: str, *, first_event: bool = False
) -> tuple[int, bytes]:
    """A raw request (an HTTP client refuses to send CR/LF in a header; an attacker does not);
    the status and the first bytes of the body (with ``first_event``: up to the first event)."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        request = (
            f"GET /v1/conversations/{cid}/events HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\nLast-Event-ID: {last_event_id}\r\n\r\n"
        )
        writer.write(request.encode("utf-8", "surrogatepass"))
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            body = await reader.read(4096)
            while first_event and status == 200 and b"event: " not in body:
                more = await reader.read(4096)
                if not more:
                    break
                body += more
        return status, body
    finally:
        writer.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HEADERS, known=st.booleans())
def test_any_last_event_id_gets_a_resync_or_a_typed_400_never_a_server_error(
    stack: Stack, gw: GatewayProc, value: str, known: bool
) -> None:
    cid = "fz-known" if known else unique("fz")
    status, body = asyncio.run(_raw_sse(gw, stack.token("fuzz-sse"), cid, value))
    assert status in (200, 400), (status, body[:200])
    if status == 400 and body.startswith(b"{"):
        assert orjson.loads(body)["error"]["code"] in CODES
    assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200


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
            Cursor(gw_epoch, (partition + 1) % TopicSettings().partitions, 5).format(),
            Cursor(gw_epoch, partition, 10**12).format(),
        ):
            status, body = await _raw_sse(gw, stack.token("fuzz-sse"), cid, cursor, first_event=True)
            assert status == 200, body
            kinds.append(
                body.split(b"event: ", 1)[1].split(b"\n", 1)[0].decode() if b"event: " in body else ""
            )
        return kinds

    gw_epoch = str(asyncio.run(cluster_metadata(stack.bootstrap, timeout_s=30))["cluster_id"])
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
