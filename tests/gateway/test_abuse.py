"""Abuse limits against real gateway processes and a real broker: cancels and WebSocket frames
rate limited per user, bad frames counted, the subscribe deadline, a per-user budget of log reads
and a deadline for a catch-up consumer, a long catch-up within the queue bound, no partition
scan for an unknown conversation, slowloris (header timeout, per-address cap), the model
allowlist and max_tokens cap, the Host check, token expiry on the AI SDK routes, 413 for chunked
bodies, /api/chat's type checks, the security headers, and redaction of encoded tokens."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

from gateway.client import Client
from tests.gateway.stack import GatewayProc, Stack, partition_of
from tests.harness import SERVICE_HEADERS, unique, wait_for

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.2"
"""Another loopback address (Linux routes all of 127/8 to lo): the per-address cap applies to
it, while 127.0.0.1 (the tests' own clients) is exempt by default."""
CAP = 5
HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def limited(stack: Stack) -> GatewayProc:
    return stack.start_gateway(
        "gateway-limited",
        {
            "TOKENLOG_GATEWAY_CANCEL_BURST": "3",
            "TOKENLOG_GATEWAY_CANCEL_RATE_PER_MIN": "1",
            "TOKENLOG_GATEWAY_WS_FRAME_BURST": "5",
            "TOKENLOG_GATEWAY_WS_FRAME_RATE_PER_MIN": "1",
            "TOKENLOG_GATEWAY_WS_MAX_INVALID_FRAMES": "3",
            "TOKENLOG_GATEWAY_WS_SUBSCRIBE_TIMEOUT_S": "2",
            "TOKENLOG_GATEWAY_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "TOKENLOG_GATEWAY_BODY_TIMEOUT_S": "1",
            "TOKENLOG_GATEWAY_CONNECTIONS_PER_IP": str(CAP),
            "TOKENLOG_GATEWAY_MAX_OUTPUT_TOKENS": "100",
            "TOKENLOG_GATEWAY_ALLOWED_HOSTS": "chat.example",
        },
    )


def _ws_url(gw: GatewayProc, cid: str, token: str) -> str:
    return gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={token}"


def _error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


# ------------------------------------------------------------------ cancels and frames


def test_cancels_over_the_per_user_rate_get_429_with_retry_after_over_http_and_websocket(
    stack: Stack, limited: GatewayProc
) -> None:
    cid = unique("cancel")
    token = stack.token("canceller")
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        assert http.post(f"/v1/conversations/{cid}/prompts", json={"text": "hi [[tokens=1]]"}, headers=auth)
        statuses = [http.post(f"/v1/conversations/{cid}/cancel", json={}, headers=auth) for _ in range(4)]
    assert [r.status_code for r in statuses] == [202, 202, 202, 429]
    assert int(statuses[3].headers["Retry-After"]) >= 1
    assert _error(statuses[3])["code"] == "rate_limited"
    assert "cancels" in _error(statuses[3])["message"]

    async def over_ws() -> dict[str, Any]:
        async with websockets.connect(_ws_url(limited, cid, token)) as ws:
            await ws.send('{"type":"cancel","ref":"c"}')
            reply = orjson.loads(await ws.recv())
            await ws.send('{"type":"ping","id":"still-open"}')  # the socket stays open
            assert orjson.loads(await ws.recv())["type"] == "pong"
            return dict(reply)

    reply = asyncio.run(over_ws())
    assert (reply["type"], reply["code"], reply["ref"]) == ("error", "rate_limited", "c")
    assert reply["retry_after_s"] > 0


def test_a_websocket_flooding_frames_gets_rate_limited_then_closed_and_bad_frames_close_it(
    stack: Stack, limited: GatewayProc
) -> None:
    async def flood(token: str, frames: list[str]) -> tuple[list[dict[str, Any]], int]:
        replies: list[dict[str, Any]] = []
        async with websockets.connect(_ws_url(limited, unique("flood"), token)) as ws:
            for frame in frames:
                await ws.send(frame)
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    async for message in ws:
                        replies.append(orjson.loads(message))
            assert ws.close_code is not None
            return replies, ws.close_code

    pongs, pong_close = asyncio.run(flood(stack.token("pinger"), ['{"type":"ping"}'] * 8))
    assert [r["type"] for r in pongs] == ["pong"] * 5 + ["error"]  # the burst, then refused
    assert (pongs[-1]["code"], pong_close) == ("rate_limited", 4429)

    bad, bad_close = asyncio.run(flood(stack.token("garbler"), ["{broken"] * 5))
    assert [r.get("code") for r in bad] == ["invalid_frame"] * 4  # three answered, the fourth says why
    assert bad_close == 4400


def test_pings_do_not_extend_the_subscribe_deadline(stack: Stack, limited: GatewayProc) -> None:
    async def idle() -> tuple[float, int | None]:
        started = time.monotonic()
        async with websockets.connect(_ws_url(limited, unique("idle"), stack.token("idler"))) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                for _ in range(20):
                    await ws.send('{"type":"ping"}')
                    await ws.recv()
                    await asyncio.sleep(0.5)  # within the frame budget: 1 a minute after 5
        return time.monotonic() - started, ws.close_code

    # 5 pings pass the frame bucket; the 6th would be refused (rate_limited, 4429). With a
    # subscribe deadline of 2 s measured from the upgrade the socket is closed before that, by the
    # deadline: 4400, whatever the machine's speed (how long it took is printed, not judged).
    elapsed, code = asyncio.run(idle())
    assert code == 4400
    print(f"\nan idle socket that only pings was closed after {elapsed:.1f}s")


# ------------------------------------------------------------------ model and max_tokens


def test_a_model_off_the_allowlist_or_max_tokens_over_the_cap_is_a_400(
    stack: Stack, limited: GatewayProc
) -> None:
    cid = unique("model")
    auth = {"Authorization": f"Bearer {stack.token('spender')}"}
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        url = f"/v1/conversations/{cid}/prompts"
        model = http.post(url, json={"text": "hi", "model": "o1-pro"}, headers=auth)
        tokens = http.post(url, json={"text": "hi", "parameters": {"max_tokens": 1_000_000}}, headers=auth)
        ok = http.post(
            url,
            json={"text": "hi [[tokens=2]]", "model": "tokenlog-demo-1", "parameters": {"max_tokens": 100}},
            headers=auth,
        )
    assert (model.status_code, _error(model)["reason"]) == (400, "model")
    assert "tokenlog-demo-1" in _error(model)["allowed"]
    assert (tokens.status_code, _error(tokens)["reason"]) == (400, "max_tokens")
    assert ok.status_code == 202

    async def over_ws() -> dict[str, Any]:
        async with websockets.connect(_ws_url(limited, cid, stack.token("spender"))) as ws:
            await ws.send('{"type":"prompt","ref":"p","text":"hi","model":"m-random"}')
            return dict(orjson.loads(await ws.recv()))

    assert asyncio.run(over_ws())["code"] == "invalid_request"


# ------------------------------------------------------------------ slowloris


def _held(address: str, port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(address, 0))
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())  # and never the end
        held.append(sock)
    return held


def _read_all(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    return data


def test_slow_headers_are_closed_with_408_an_address_over_its_cap_gets_429_and_healthz_keeps_answering(
    limited: GatewayProc,
) -> None:
    port = int(limited.url.rsplit(":", 1)[1])
    started = time.monotonic()
    held = _held(ATTACKER, port, CAP)
    try:
        over = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(ATTACKER, 0))
        refused = _read_all(over, 5)
        over.close()
        assert refused.startswith(b"HTTP/1.1 429 "), refused[:100]
        assert b'"too_many_connections"' in refused
        assert httpx.get(f"{limited.url}/healthz", timeout=5).status_code == 200  # others are served
        answers = [_read_all(sock, 10) for sock in held]
        elapsed = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in a for a in answers), answers[0][
        :100
    ]
    print(f"\nslow headers answered 408 after {elapsed:.1f}s (header timeout {HEADER_TIMEOUT_S}s)")
    # Closed, they no longer count: the address is admitted again.
    again = _held(ATTACKER, port, 1)[0]
    try:
        again.sendall(b"Connection: close\r\n\r\n")
        assert _read_all(again, 5).startswith(b"HTTP/1.1 200 ")
    finally:
        again.close()
    assert httpx.get(f"{limited.url}/healthz", timeout=5).status_code == 200


def test_a_body_sent_too_slowly_gets_408_and_a_chunked_body_over_the_limit_413_on_every_route(
    stack: Stack, limited: GatewayProc
) -> None:
    port = int(limited.url.rsplit(":", 1)[1])
    token = stack.token("chunker")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST /v1/conversations/c-slow/prompts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\ncontent-type: application/json\r\n"
        "content-length: 100\r\n\r\n{".encode()
    )
    slow = _read_all(sock, 10)
    sock.close()
    assert slow.startswith(b"HTTP/1.1 408 "), slow[:100]

    def chunks() -> Iterator[bytes]:
        yield b'{"text":"'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    routes = [
        "/v1/conversations/c-big/prompts",
        "/v1/conversations/c-big/cancel",
        "/api/chat",
        "/v1/dev/token",
    ]
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        answers = [http.post(route, content=chunks(), headers=headers) for route in routes]
    assert [(r.status_code, _error(r)["code"]) for r in answers] == [(413, "payload_too_large")] * len(routes)


# ------------------------------------------------------------------ Host (DNS rebinding)


def test_development_mode_refuses_a_host_that_is_not_loopback_or_allowlisted(limited: GatewayProc) -> None:
    port = int(limited.url.rsplit(":", 1)[1])
    body = {"user_id": "victim"}

    def token_for(host: str) -> httpx.Response:
        return httpx.post(f"{limited.url}/v1/dev/token", json=body, headers={"Host": host}, timeout=10)

    rebound = token_for(f"attacker.example:{port}")
    assert (rebound.status_code, _error(rebound)["code"]) == (400, "host_not_allowed")
    assert "token" not in rebound.json()
    assert (
        httpx.get(f"{limited.url}/healthz", headers={"Host": "attacker.example"}, timeout=10).status_code
        == 400
    )
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "chat.example"):
        assert token_for(host).status_code == 200, host

    def upgrade(host: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"GET /v1/conversations/c-x/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            return sock.recv(4096)

    assert upgrade(f"attacker.example:{port}").startswith(b"HTTP/1.1 400 ")
    assert upgrade(f"127.0.0.1:{port}").startswith(b"HTTP/1.1 401 ")  # past the Host check: no token


# ------------------------------------------------------------------ the AI SDK routes


def test_the_ai_sdk_stream_ends_with_an_error_when_its_token_expires(
    stack: Stack, limited: GatewayProc
) -> None:
    cid = unique("expiry")
    token = stack.tokens.issue("expiring", ttl_s=3)
    chat = {
        "id": cid,
        "messages": [
            {"role": "user", "id": "m-1", "parts": [{"type": "text", "text": "[[tokens=400]] [[rate=20]]"}]}
        ],
    }

    async def read(stream: AsyncIterator[bytes]) -> bytes:
        data = b""
        async with asyncio.timeout(15):
            async for chunk in stream:
                data += chunk
        return data

    async def go() -> tuple[bytes, bytes, float]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=limited.url, timeout=30) as http:
            started = time.monotonic()
            async with http.stream("POST", "/api/chat", json=chat, headers=headers) as response:
                assert response.status_code == 200
                posted = await read(response.aiter_raw())
            async with http.stream("GET", f"/api/chat/{cid}/stream", headers=headers) as response:
                resumed = await read(response.aiter_raw()) if response.status_code == 200 else b""
            return posted, resumed, time.monotonic() - started

    posted, resumed, elapsed = asyncio.run(go())
    assert b'"type":"error"' in posted
    assert b"token expired" in posted
    assert b'"type":"finish"' not in posted
    print(f"\nthe expired stream ended after {elapsed:.1f}s (the answer lasts 20 s)")
    assert resumed == b"" or b"token expired" in resumed


def test_chat_parts_of_the_wrong_type_get_400_not_500(stack: Stack, limited: GatewayProc) -> None:
    auth = {"Authorization": f"Bearer {stack.token('confused')}"}
    bodies = [
        {
            "id": unique("c"),
            "messages": [{"role": "user", "id": "m1", "parts": [{"type": "text", "text": 5}]}],
        },
        {"id": unique("c"), "messages": [{"role": "user", "id": "m1", "parts": 5}]},
    ]
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        answers = [http.post("/api/chat", json=body, headers=auth) for body in bodies]
    assert [(r.status_code, _error(r)["code"]) for r in answers] == [(400, "invalid_request")] * 2
    assert "Traceback" not in limited.proc.log_path.read_text()


# ------------------------------------------------------------------ headers and logs


def test_the_app_and_its_static_files_carry_the_csp_and_security_headers(limited: GatewayProc) -> None:
    with httpx.Client(base_url=limited.url, timeout=10) as http:
        for path in ("/", "/static/app.js", "/static/style.css", "/healthz"):
            headers = http.get(path).headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"], path
            assert "default-src 'self'" in headers["content-security-policy"], path
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["referrer-policy"] == "no-referrer", path


def test_a_token_under_an_encoded_parameter_name_never_reaches_the_log(
    stack: Stack, limited: GatewayProc
) -> None:
    token = stack.token("encoder")
    base = limited.url.replace("http://", "ws://")

    async def go() -> list[str]:
        kinds = []
        for name in ("access%5Ftoken", "%61ccess_token", "access%5ftoken"):
            async with websockets.connect(f"{base}/v1/conversations/{unique('enc')}/ws?{name}={token}") as ws:
                await ws.send('{"type":"subscribe","cursor":"now"}')
                kinds.append(orjson.loads(await ws.recv())["type"])
        return kinds

    assert asyncio.run(go()) == ["subscribed"] * 3  # accepted: Starlette decodes the name
    log = limited.proc.log_path.read_text()
    assert "WebSocket /v1/conversations/" in log  # the lines are there, the token is not
    assert token not in log
    assert token.split(".")[2] not in log


# ------------------------------------------------------------------ log reads


def test_a_beginning_cursor_on_an_unknown_conversation_reads_nothing_from_the_log(stack: Stack) -> None:
    """Without the backfill the hub cannot place an unknown conversation before its start: the
    session app's 404 (with its cursor) answers instead of a scan of the partition."""
    seed = unique("seed")
    partition = partition_of(seed)

    async def seeded() -> None:
        async with Client(stack_gw.url, stack.token("seeder")) as client:
            follower = client.follow(seed, transport="sse")
            await client.prompt(seed, "seed [[tokens=50]] [[rate=0]]", prompt_id="p-1")
            await follower.once(until=lambda f: f.get("type") == "response.completed", timeout_s=60)

        async def applied() -> bool:
            async with httpx.AsyncClient(timeout=10) as http:
                return (
                    await http.get(f"{stack.sessions_url}/sessions/{seed}", headers=SERVICE_HEADERS)
                ).status_code == 200

        await wait_for(applied, timeout_s=60, interval_s=0.2)

    stack_gw = stack.start_gateway("gateway-seeder")
    asyncio.run(seeded())
    fresh = stack.start_gateway("gateway-nobackfill", {"TOKENLOG_GATEWAY_BACKFILL_RECORDS": "0"})
    unknown = next(c for c in (unique("unknown") for _ in range(1000)) if partition_of(c) == partition)

    async def begin() -> list[dict[str, Any]]:
        async with Client(fresh.url, stack.token("scanner")) as client:
            follower = client.follow(unknown, transport="sse", cursor="beginning")
            following = asyncio.ensure_future(
                follower.once(until=lambda f: f.get("type") == "response.completed", timeout_s=60)
            )
            await wait_for(lambda: fresh.metric("tokenlog_gateway_connections", transport="sse") == 1)
            accepted = await client.prompt(unknown, "now [[tokens=3]] [[rate=0]]", prompt_id="p-1")
            assert accepted["partition"] == partition
            await following
            return follower.received

    frames = asyncio.run(begin())
    assert [f["type"] for f in frames][-1] == "response.completed"  # opened, then live
    assert fresh.metric("tokenlog_gateway_catchup_records_read") == 0  # no partition scan


def test_a_client_that_reads_nothing_holds_its_queue_bound_and_one_reader_and_others_get_typed_errors(
    stack: Stack,
) -> None:
    """A long catch-up to a client that reads nothing waits for room (its queue stays within the
    cap) and is closed as slow after the catch-up's time. Meanwhile its user's second read gets
    429 ``too_many_reads`` and another user, with the only consumer taken, 503 ``unavailable`` in
    the acquire deadline instead of a wait without end."""
    queue = 32
    gw = stack.start_gateway(
        "gateway-reads",
        {
            "TOKENLOG_GATEWAY_WINDOW_EVENTS": "16",  # resumes go through the seek path
            "TOKENLOG_GATEWAY_CATCHUP_CONSUMERS": "1",
            "TOKENLOG_GATEWAY_READS_PER_USER": "1",
            "TOKENLOG_GATEWAY_QUEUE_FRAMES": str(queue),
            "TOKENLOG_GATEWAY_SEND_BUFFER_BYTES": "4096",
            "TOKENLOG_GATEWAY_CATCHUP_TIMEOUT_S": "5",
            "TOKENLOG_GATEWAY_CATCHUP_ACQUIRE_TIMEOUT_S": "0.5",
        },
    )
    hoarder, other = stack.token("hoarder"), stack.token("bystander")
    long_cid, short_cid = unique("long"), unique("short")

    writer = stack.start_gateway("gateway-writer")  # the reads gateway's own queue is too small

    async def written(token: str, cid: str, tokens: int) -> str:
        async with Client(writer.url, token) as client:
            follower = client.follow(cid, transport="sse")
            following = asyncio.ensure_future(
                follower.once(until=lambda f: f.get("type") == "response.completed", timeout_s=120)
            )
            await wait_for(
                lambda: not following.done() and writer.metric("tokenlog_gateway_connections") >= 1
            )
            await client.prompt(cid, f"long [[tokens={tokens}]] [[rate=0]]", prompt_id="p-1")
            await following
            started = [f for f in follower.received if f.get("type") == "response.started"]
            assert started, [f.get("type") for f in follower.received][:5]
            first: str = started[0]["cursor"]
            return first

    first_long = asyncio.run(written(hoarder, long_cid, 3000))
    first_short = asyncio.run(written(other, short_cid, 60))
    port = int(gw.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    try:
        sock.sendall(
            f"GET /v1/conversations/{long_cid}/events?cursor={first_long}&access_token={hoarder} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 200 ")  # and then nothing more is read
        with httpx.Client(base_url=gw.url, timeout=30) as http:
            wait_until_held = time.monotonic() + 10
            while gw.metric("tokenlog_gateway_client_lag_frames") < queue // 2:
                assert time.monotonic() < wait_until_held, (
                    "the catch-up never filled the queue",
                    first_long,
                    httpx.get(f"{gw.url}/metrics").text[-3000:],
                )
                time.sleep(0.05)
            own = http.get(f"/v1/conversations/{long_cid}/events?cursor={first_long}&access_token={hoarder}")
            started = time.monotonic()
            blocked = http.get(
                f"/v1/conversations/{short_cid}/events?cursor={first_short}&access_token={other}"
            )
            waited = time.monotonic() - started
            lag = gw.metric("tokenlog_gateway_client_lag_frames")

            def served() -> bool:
                with http.stream(
                    "GET", f"/v1/conversations/{short_cid}/events?cursor={first_short}&access_token={other}"
                ) as response:
                    return response.status_code == 200

            deadline = time.monotonic() + 20
            while not served():  # once the slow client is closed, the consumer is free again
                assert time.monotonic() < deadline, "the consumer was never freed"
                time.sleep(0.2)
    finally:
        sock.close()
    assert (own.status_code, _error(own)["code"]) == (429, "too_many_reads")
    assert int(own.headers["Retry-After"]) >= 1
    assert (blocked.status_code, _error(blocked)["code"]) == (503, "unavailable")
    assert waited < 3
    assert "Error" not in _error(blocked)["message"]  # no Kafka exception text
    assert lag <= queue
    assert gw.metric("tokenlog_gateway_slow_client_closes_total", transport="sse") >= 1
