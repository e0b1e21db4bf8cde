"""Every documented error path against real processes: a WebSocket with a bad, expired or missing
token (401 before the upgrade), a token that expires while an SSE or WebSocket stream is open (the
stream ends with ``unauthorized``, close 4401; a new token resumes it), 405 on every route, 421
``wrong_shard`` from a gateway that serves one partition; each with the typed body or close code,
the gateway serving on. Last, README's error table: every row names the tests that assert it."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

import httpx
import orjson
import pytest
import websockets

from gateway.client import Client
from gateway.errors import RULES
from gateway.wire import SSEDecoder
from tests.gateway.stack import GatewayProc, Stack, partition_of
from tests.harness import unique
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration

LONG = "[[tokens=400]] [[rate=20]]"
"""An answer that lasts 20 s: it is still being written when a 3 s token expires."""
TTL_S = 3


def _ws_url(gw: GatewayProc, cid: str, token: str | None) -> str:
    query = f"?access_token={token}" if token is not None else ""
    return gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws{query}"


def _serves(gw: GatewayProc, stack: Stack) -> None:
    """The gateway still answers: ready, and a new prompt is accepted."""
    assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200
    accepted = httpx.post(
        f"{gw.url}/v1/conversations/{unique('after')}/prompts",
        json={"text": "still here [[tokens=1]] [[rate=0]]"},
        headers={"Authorization": f"Bearer {stack.token(unique('after-user'))}"},
        timeout=30,
    )
    assert accepted.status_code == 202, accepted.text


# ------------------------------------------------------------------ 401 on WebSocket


def test_a_websocket_with_a_bad_expired_or_missing_token_is_refused_with_401_before_the_upgrade(
    stack: Stack, gw: GatewayProc
) -> None:
    cid = unique("conv")
    tokens = {
        "expired": stack.tokens.issue("alice", ttl_s=-10),
        "garbage": "not.a.token",
        "tampered": stack.token("alice")[:-3] + "AAA",
        "missing": None,
    }

    async def refused(token: str | None) -> tuple[int, dict[str, Any]]:
        with pytest.raises(websockets.InvalidStatus) as denied:
            async with websockets.connect(_ws_url(gw, cid, token)):
                pass
        response = denied.value.response
        return response.status_code, orjson.loads(response.body or b"{}")

    for name, token in tokens.items():
        status, body = asyncio.run(refused(token))
        assert status == 401, name
        assert (body["error"]["code"], body["error"]["action"]) == ("unauthorized", "reauthenticate"), name
    _serves(gw, stack)


# ------------------------------------------------------------------ expiry mid-stream


async def _sse_until_it_ends(gw: GatewayProc, cid: str, token: str) -> list[tuple[str, str | None, str]]:
    """Every event of the conversation on an SSE stream opened with ``token``, until the server
    ends it."""
    decoder = SSEDecoder()
    events: list[tuple[str, str | None, str]] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as http:
        url = f"{gw.url}/v1/conversations/{cid}/events"
        params = {"access_token": token, "cursor": "beginning"}  # the answer's every event
        async with asyncio.timeout(60), http.stream("GET", url, params=params) as response:  # it ends
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                events += decoder.feed(chunk)
    return events


def test_an_sse_stream_ends_with_unauthorized_when_its_token_expires_and_a_new_token_resumes_it(
    stack: Stack, gw: GatewayProc
) -> None:
    cid, user = unique("expiry"), unique("expiring")

    async def go() -> tuple[list[tuple[str, str | None, str]], list[dict[str, Any]], int]:
        async with Client(gw.url, stack.token(user)) as client:
            accepted = await client.prompt(cid, f"Expire me {LONG}", prompt_id="p-1")
            events = await _sse_until_it_ends(gw, cid, stack.tokens.issue(user, ttl_s=TTL_S))
            cursor = next(id_ for _, id_, _ in reversed(events) if id_ is not None)
            resumed = client.follow(cid, transport="sse", cursor=cursor)
            await resumed.once(until=lambda f: f.get("type") == "response.completed", timeout_s=60)
            return events, resumed.received, accepted["partition"]

    events, resumed, partition = asyncio.run(go())
    kinds = [kind for kind, _, _ in events]
    assert kinds[-1] == "error", kinds[-5:]
    error = orjson.loads(events[-1][2])["error"]
    assert (error["code"], error["action"]) == ("unauthorized", "reauthenticate")
    assert "response.completed" not in kinds, "the answer ended before the token expired"
    assert "token" in kinds  # the stream was live when it expired
    transcript = asyncio.run(read_transcript(stack.bootstrap, partition, [cid], all_finished(["p-1"])))
    text = "".join(orjson.loads(d)["text"] for k, _, d in events if k == "token")
    text += "".join(f["text"] for f in resumed if f.get("type") == "token")
    assert text == transcript.by_prompt()["p-1"].text  # nothing lost, nothing twice across the expiry
    _serves(gw, stack)


def test_a_websocket_stream_ends_with_unauthorized_and_close_4401_when_its_token_expires(
    stack: Stack, gw: GatewayProc
) -> None:
    cid, user = unique("expiry"), unique("expiring")

    async def go() -> tuple[list[dict[str, Any]], int]:
        async with Client(gw.url, stack.token(user)) as client:
            await client.prompt(cid, f"Expire me {LONG}", prompt_id="p-1")
        frames: list[dict[str, Any]] = []
        async with websockets.connect(_ws_url(gw, cid, stack.tokens.issue(user, ttl_s=TTL_S))) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "ref": "s"}).decode())

            async def read() -> None:
                async with asyncio.timeout(60):
                    async for message in ws:
                        frames.append(orjson.loads(message))

            with pytest.raises(websockets.ConnectionClosed) as closed:
                await read()
        assert closed.value.rcvd is not None, "closed without a close frame"
        return frames, closed.value.rcvd.code

    frames, code = asyncio.run(go())
    assert code == RULES["unauthorized"].close_code == 4401
    kinds = [f["type"] for f in frames]
    assert (frames[-1]["type"], frames[-1]["code"], frames[-1]["action"]) == (
        "error",
        "unauthorized",
        "reauthenticate",
    )
    assert "token" in kinds
    assert "response.completed" not in kinds, "the answer ended before the token expired"
    _serves(gw, stack)


# ------------------------------------------------------------------ 405


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/conversations/c-1/prompts"),
        ("GET", "/v1/conversations/c-1/prompts"),
        ("PUT", "/v1/conversations/c-1/cancel"),
        ("POST", "/v1/conversations/c-1"),
        ("POST", "/v1/conversations/c-1/events"),
        ("GET", "/api/chat"),
        ("POST", "/api/chat/c-1/stream"),
        ("GET", "/v1/dev/token"),
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
        ("POST", "/static/app.js"),
    ],
)
def test_a_method_a_route_does_not_take_gets_405_with_allow(
    stack: Stack, gw: GatewayProc, method: str, path: str
) -> None:
    auth = {"Authorization": f"Bearer {stack.token('alice')}"}
    response = httpx.request(method, f"{gw.url}{path}", headers=auth, timeout=10)
    assert response.status_code == 405, response.text
    error = response.json()["error"]
    assert (error["code"], error["action"]) == ("method_not_allowed", "stop")
    assert method not in response.headers["Allow"]
    assert response.headers["Allow"]  # what the route does take
    assert httpx.get(f"{gw.url}/healthz", timeout=10).status_code == 200


# ------------------------------------------------------------------ 404


def test_a_conversation_nobody_wrote_to_gets_404_unknown_conversation(stack: Stack, gw: GatewayProc) -> None:
    cid = unique("nobody")
    with httpx.Client(
        base_url=gw.url, headers={"Authorization": f"Bearer {stack.token('alice')}"}, timeout=30
    ) as http:
        answers = [
            http.get(f"/v1/conversations/{cid}"),
            http.post(f"/v1/conversations/{cid}/cancel", json={}),
        ]
    for response in answers:
        assert response.status_code == 404, response.text
        assert (response.json()["error"]["code"], response.json()["error"]["action"]) == (
            "unknown_conversation",
            "stop",
        )
    _serves(gw, stack)


# ------------------------------------------------------------------ 421


def _cid_in(partitions: set[int], *, inside: bool) -> str:
    while True:
        cid = unique("shard")
        if (partition_of(cid) in partitions) == inside:
            return cid


def test_a_gateway_that_does_not_read_a_partition_answers_421_wrong_shard_on_every_route(
    stack: Stack,
) -> None:
    shard = stack.start_gateway("gateway-shard-0", {"TOKENLOG_GATEWAY_PARTITIONS": "0"})
    elsewhere, here = _cid_in({0}, inside=False), _cid_in({0}, inside=True)
    auth = {"Authorization": f"Bearer {stack.token('sharded')}"}
    chat = {
        "id": elsewhere,
        "messages": [{"role": "user", "id": "m-1", "parts": [{"type": "text", "text": "x"}]}],
    }
    with httpx.Client(base_url=shard.url, headers=auth, timeout=30) as http:
        answers = {
            "prompt": http.post(f"/v1/conversations/{elsewhere}/prompts", json={"text": "x [[tokens=1]]"}),
            "cancel": http.post(f"/v1/conversations/{elsewhere}/cancel", json={}),
            "snapshot": http.get(f"/v1/conversations/{elsewhere}"),
            "sse": http.get(f"/v1/conversations/{elsewhere}/events"),
            "chat": http.post("/api/chat", json=chat),
            "chat resume": http.get(f"/api/chat/{elsewhere}/stream"),
        }
        for route, response in answers.items():
            assert response.status_code == 421, (route, response.text)
            error = response.json()["error"]
            assert (error["code"], error["action"]) == ("wrong_shard", "retry"), route

        async def websocket() -> tuple[int, dict[str, Any]]:
            with pytest.raises(websockets.InvalidStatus) as denied:
                async with websockets.connect(_ws_url(shard, elsewhere, stack.token("sharded"))):
                    pass
            return denied.value.response.status_code, orjson.loads(denied.value.response.body or b"{}")

        status, body = asyncio.run(websocket())
        assert (status, body["error"]["code"]) == (421, "wrong_shard")
        # Its own partition it serves.
        served = http.post(f"/v1/conversations/{here}/prompts", json={"text": "mine [[tokens=1]] [[rate=0]]"})
        assert served.status_code == 202, served.text
    assert httpx.get(f"{shard.url}/readyz", timeout=10).status_code == 200


# ------------------------------------------------------------------ README's error table

COVERED: dict[str, tuple[str, ...]] = {
    "invalid_request": (
        "test_api::test_prompts_are_idempotent_on_prompt_id_and_invalid_input_gets_typed_errors",
    ),
    "invalid_marker": (
        "test_markers::test_the_json_api_answers_a_prompt_over_the_marker_caps_with_400_invalid_marker",
    ),
    "invalid_frame": ("test_api::test_websocket_prompt_cancel_and_ping_frames_are_acknowledged",),
    "invalid_cursor": ("test_streams::_bad_cursors",),
    "unauthorized": (
        "test_api::test_expired_tampered_and_wrong_algorithm_tokens_get_401",
        "test_error_paths::test_a_websocket_with_a_bad_expired_or_missing_token_is_refused_with_401_before_the_upgrade",
        "test_error_paths::test_an_sse_stream_ends_with_unauthorized_when_its_token_expires_and_a_new_token_resumes_it",
        "test_error_paths::test_a_websocket_stream_ends_with_unauthorized_and_close_4401_when_its_token_expires",
    ),
    "forbidden": ("test_api::test_another_users_token_gets_403_and_no_data_on_every_route",),
    "origin_not_allowed": (
        "test_api::test_a_websocket_from_an_origin_not_on_the_allowlist_is_refused_before_the_upgrade",
    ),
    "unknown_conversation": (
        "test_error_paths::test_a_conversation_nobody_wrote_to_gets_404_unknown_conversation",
    ),
    "not_found": ("test_api::test_prompts_are_idempotent_on_prompt_id_and_invalid_input_gets_typed_errors",),
    "method_not_allowed": ("test_error_paths::test_a_method_a_route_does_not_take_gets_405_with_allow",),
    "prompt_id_reused": (
        "test_api::test_prompts_are_idempotent_on_prompt_id_and_invalid_input_gets_typed_errors",
    ),
    "payload_too_large": (
        "test_api::test_prompts_are_idempotent_on_prompt_id_and_invalid_input_gets_typed_errors",
    ),
    "host_not_allowed": (
        "test_abuse::test_development_mode_refuses_a_host_that_is_not_loopback_or_allowlisted",
    ),
    "request_timeout": (
        "test_abuse::test_a_body_sent_too_slowly_gets_408_and_a_chunked_body_over_the_limit_413_on_every_route",
    ),
    "rate_limited": ("test_api::test_prompts_over_the_per_user_rate_get_429_with_retry_after",),
    "too_many_connections": (
        "test_security::test_a_user_over_the_connection_cap_gets_429_on_both_transports_and_others_are_unaffected",
    ),
    "too_many_reads": (
        "test_abuse::test_a_client_that_reads_nothing_holds_its_queue_bound_and_one_reader_and_others_get_typed_errors",
    ),
    "wrong_shard": (
        "test_error_paths::test_a_gateway_that_does_not_read_a_partition_answers_421_wrong_shard_on_every_route",
    ),
    "internal": (
        "test_bad_input::test_every_operation_answers_generated_requests_as_its_openapi_document_says",
    ),
    "unavailable": (
        "test_markers::test_the_json_api_answers_a_prompt_over_the_marker_caps_with_400_invalid_marker",
        "test_abuse::test_a_client_that_reads_nothing_holds_its_queue_bound_and_one_reader_and_others_get_typed_errors",
    ),
    "slow_client": ("test_slow_and_shutdown::_slow_client",),
    "going_away": ("test_slow_and_shutdown::test_graceful_shutdown_tells_every_client_to_resume_elsewhere",),
}
"""Each row of README's error table and the tests that assert its code, status or close code
(``internal``: a bug, not an input; schemathesis' ``not_a_server_error`` is the check that none
comes). The AI SDK's expiry (test_abuse) is not listed: its ``error`` part carries only a text."""


def test_every_row_of_the_error_table_has_a_test_that_asserts_it() -> None:
    assert set(COVERED) == set(RULES), "a code of errors.py's table (README's) without a test here"
    for code, tests in COVERED.items():
        rule = RULES[code]
        marks = {f'"{code}"'} | {str(n) for n in (rule.status, rule.close_code) if n}
        if code == "internal":
            marks = {"not_a_server_error", "CONFORMANCE"}  # test_bad_input's checks, not_a_server_error first
        for name in tests:
            module, function = name.split("::")
            source = inspect.getsource(getattr(importlib.import_module(f"tests.gateway.{module}"), function))
            assert any(mark in source for mark in marks), f"{name} does not assert {code}"
