"""The HTTP API against real processes: auth and ownership, commands, validation, operations."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import orjson
import pytest
import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.client import Client, ClientError
from infra.process import wait_until
from schemas.codec import PROMPTS
from schemas.records import PromptSubmitted, ResponseStarted
from schemas.registry import PROMPTS_TOPIC
from tests.gateway.stack import GatewayProc, Stack
from tests.harness import unique
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration


async def prompts_of(bootstrap: str, partition: int, cid: str) -> list[str]:
    """The prompt ids of every ``PromptSubmitted`` of ``cid`` in ``conversation.prompts``, as
    written, up to the partition's end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(PROMPTS_TOPIC, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])  # explicit: no reset policy
        ids: list[str] = []
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if record.key == cid.encode():
                    event = PROMPTS.decode(record.value)
                    if isinstance(event, PromptSubmitted):
                        ids.append(event.prompt_id)
        return ids
    finally:
        await consumer.stop()


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message", "action"} <= set(body["error"])
    return dict(body["error"])


def test_another_users_token_gets_403_and_no_data_on_every_route(stack: Stack, gw: GatewayProc) -> None:
    cid = unique("conv")
    secret_text = unique("only-alice-may-read")
    alice, mallory = stack.token("alice"), stack.token("mallory")
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        accepted = http.post(
            f"/v1/conversations/{cid}/prompts",
            json={"prompt_id": "p-1", "text": f"{secret_text} [[tokens=5]] [[rate=0]]"},
            headers={"Authorization": f"Bearer {alice}"},
        )
        assert accepted.status_code == 202
        asyncio.run(
            read_transcript(stack.bootstrap, accepted.json()["partition"], [cid], all_finished(["p-1"]))
        )
        as_mallory = {"Authorization": f"Bearer {mallory}"}
        responses = [
            http.get(f"/v1/conversations/{cid}", headers=as_mallory),
            http.get(f"/v1/conversations/{cid}/events", params={"access_token": mallory}),
            http.get(f"/v1/conversations/{cid}/events", params={"cursor": "beginning"}, headers=as_mallory),
            http.post(f"/v1/conversations/{cid}/prompts", json={"text": "mine now"}, headers=as_mallory),
            http.post(f"/v1/conversations/{cid}/cancel", json={}, headers=as_mallory),
        ]
        for response in responses:
            assert response.status_code == 403, response.text
            assert _error(response)["code"] == "forbidden"
            assert secret_text not in response.text

        # Alice reads it.
        def alice_reads_it() -> bool:  # the session app may trail the log by a moment
            own = http.get(f"/v1/conversations/{cid}", headers={"Authorization": f"Bearer {alice}"})
            assert own.status_code in (200, 404)
            return own.status_code == 200 and bool(own.json()["turns"])

        wait_until(alice_reads_it, 30, 0.1, what="the conversation to reach the session app")
        own = http.get(f"/v1/conversations/{cid}", headers={"Authorization": f"Bearer {alice}"})
        assert secret_text in own.json()["turns"][0]["prompt_text"]

    async def websocket_denied() -> int:
        url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={mallory}"
        with pytest.raises(websockets.InvalidStatus) as denied:
            async with websockets.connect(url):
                pass
        assert secret_text.encode() not in (denied.value.response.body or b"")
        return denied.value.response.status_code

    assert asyncio.run(websocket_denied()) == 403


def test_expired_tampered_and_wrong_algorithm_tokens_get_401(stack: Stack, gw: GatewayProc) -> None:
    cid = unique("conv")
    now = int(time.time())
    good = stack.token("alice")
    header, payload, signature = good.split(".")
    tampered_sig = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    claims = {"sub": "alice", "iss": "tokenlog", "iat": now, "exp": now + 600}
    forged_claims = jwt.encode({**claims, "sub": "mallory"}, "not-the-secret-" * 3, algorithm="HS256")
    bad = {
        "expired": stack.tokens.issue("alice", ttl_s=-10),
        "tampered": tampered_sig,
        "forged": forged_claims,
        "hs512": jwt.encode(claims, stack.secret, algorithm="HS512"),
        "none": jwt.encode(claims, None, algorithm="none"),
        "garbage": "not.a.token",
    }
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        for name, token in bad.items():
            response = http.get(f"/v1/conversations/{cid}/events", params={"access_token": token})
            assert response.status_code == 401, name
            assert _error(response)["action"] == "reauthenticate"
        missing = http.post(f"/v1/conversations/{cid}/prompts", json={"text": "hi"})
        assert missing.status_code == 401
        assert _error(missing)["code"] == "unauthorized"


def test_prompts_are_idempotent_on_prompt_id_and_invalid_input_gets_typed_errors(
    stack: Stack, gw: GatewayProc, gw2: GatewayProc
) -> None:
    cid = unique("conv")
    auth = {"Authorization": f"Bearer {stack.token('alice')}"}
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        body = {"prompt_id": "p-same", "text": "Once [[tokens=5]] [[rate=0]]"}
        first = http.post(f"/v1/conversations/{cid}/prompts", json=body, headers=auth)
        again = http.post(f"/v1/conversations/{cid}/prompts", json=body, headers=auth)
        assert first.status_code == again.status_code == 202
        assert again.json()["response_id"] == first.json()["response_id"]
        assert again.json()["duplicate"] is True
        reused = http.post(
            f"/v1/conversations/{cid}/prompts", json={**body, "text": "something else"}, headers=auth
        )
        assert reused.status_code == 409
        assert _error(reused)["code"] == "prompt_id_reused"
        # A second gateway that never saw it writes it again: the worker still answers once.
        elsewhere = httpx.post(
            f"{gw2.url}/v1/conversations/{cid}/prompts", json=body, headers=auth, timeout=30
        )
        assert elsewhere.status_code == 202, elsewhere.text
        assert elsewhere.json()["duplicate"] is False  # written again
        assert elsewhere.json()["response_id"] == first.json()["response_id"]
        # The next prompt of the partition: answered only after the worker has seen the rewrite.
        later = http.post(
            f"/v1/conversations/{cid}/prompts",
            json={"prompt_id": "p-next", "text": "Next [[tokens=2]] [[rate=0]]"},
            headers=auth,
        )
        assert later.status_code == 202

        cases = [
            ("/v1/conversations/bad%20id/prompts", {"text": "x"}, 400, "invalid_request"),
            (f"/v1/conversations/{cid}/prompts", {"text": ""}, 400, "invalid_request"),
            (
                f"/v1/conversations/{cid}/prompts",
                {"text": "x", "prompt_id": "has space"},
                400,
                "invalid_request",
            ),
            (f"/v1/conversations/{cid}/prompts", {"text": "x", "unknown": 1}, 400, "invalid_request"),
            (f"/v1/conversations/{cid}/prompts", {"text": "x" * 70_000}, 413, "payload_too_large"),
        ]
        for path, payload, status, code in cases:
            response = http.post(path, json=payload, headers=auth)
            assert response.status_code == status, (
                payload if len(str(payload)) < 100 else path,
                response.text,
            )
            assert _error(response)["code"] == code
        not_json = http.post(
            f"/v1/conversations/{cid}/prompts",
            content=b"{not json",
            headers={**auth, "Content-Type": "application/json"},
        )
        assert not_json.status_code == 400
        assert _error(not_json)["code"] == "invalid_request"
        nowhere = http.get("/v1/nowhere")
        assert nowhere.status_code == 404
        assert _error(nowhere)["code"] == "not_found"
    transcript = asyncio.run(
        read_transcript(stack.bootstrap, first.json()["partition"], [cid], all_finished(["p-same", "p-next"]))
    )
    starts = [e for _, e in transcript.events if isinstance(e, ResponseStarted) and e.prompt_id == "p-same"]
    assert len(starts) == 1
    written = asyncio.run(prompts_of(stack.bootstrap, first.json()["partition"], cid))
    assert written.count("p-same") == 2  # both gateways wrote it; one answer


def test_prompts_over_the_per_user_rate_get_429_with_retry_after(stack: Stack) -> None:
    limited = stack.start_gateway(
        "gateway-limited",
        {"TOKENLOG_GATEWAY_PROMPT_BURST": "3", "TOKENLOG_GATEWAY_PROMPT_RATE_PER_MIN": "1"},
    )
    cid = unique("conv")
    auth = {"Authorization": f"Bearer {stack.token('alice')}"}
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        statuses = [
            http.post(f"/v1/conversations/{cid}/prompts", json={"text": "hi [[tokens=1]]"}, headers=auth)
            for _ in range(5)
        ]
    assert [r.status_code for r in statuses] == [202, 202, 202, 429, 429]
    assert int(statuses[3].headers["Retry-After"]) >= 1
    assert _error(statuses[3])["action"] == "retry"


def test_websocket_prompt_cancel_and_ping_frames_are_acknowledged(stack: Stack, gw: GatewayProc) -> None:
    cid = unique("conv")
    token = stack.token("alice")

    async def scenario() -> list[dict[str, Any]]:
        url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={token}"
        frames: list[dict[str, Any]] = []
        async with websockets.connect(url) as ws:
            await ws.send(orjson.dumps({"type": "ping", "id": 7}).decode())
            frames.append(orjson.loads(await ws.recv()))
            await ws.send("{broken")
            frames.append(orjson.loads(await ws.recv()))
            await ws.send(orjson.dumps({"type": "subscribe", "ref": "s"}).decode())
            await ws.send(
                orjson.dumps(
                    {
                        "type": "prompt",
                        "ref": "q",
                        "prompt_id": "p-1",
                        "text": "Stop me [[tokens=2000]] [[rate=50]]",
                    }
                ).decode()
            )
            cancelled = False
            async for message in ws:
                frame = orjson.loads(message)
                frames.append(frame)
                if frame["type"] == "token" and frame["seq"] == 3 and not cancelled:
                    await ws.send(orjson.dumps({"type": "cancel", "ref": "c"}).decode())
                    cancelled = True
                if frame["type"] == "response.cancelled":
                    break
        return frames

    frames = asyncio.run(scenario())
    assert frames[0] == {"type": "pong", "id": 7, "ref": None}
    assert frames[1]["type"] == "error"
    assert frames[1]["code"] == "invalid_frame"
    kinds = [f["type"] for f in frames]
    assert "subscribed" in kinds
    acks = {f["ref"]: f for f in frames if f["type"] == "ack"}
    assert acks["q"]["response_id"].startswith("r-")
    assert acks["c"]["command"] == "cancel"
    assert kinds[-1] == "response.cancelled"
    cancelled = frames[-1]
    tokens = [f for f in frames if f["type"] == "token" and f["response_id"] == cancelled["response_id"]]
    assert [t["seq"] for t in tokens] == list(range(cancelled["last_seq"] + 1))  # every token up to it, once
    assert 3 <= cancelled["last_seq"] < 1000  # stopped after the cancel went out, long before the end


def test_a_websocket_from_an_origin_not_on_the_allowlist_is_refused_before_the_upgrade(
    stack: Stack, gw: GatewayProc
) -> None:
    token = stack.token("alice")
    url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{unique('conv')}/ws?access_token={token}"

    async def connect(origin: str) -> int:
        try:
            async with websockets.connect(url, origin=origin):  # type: ignore[arg-type]
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(connect("http://evil.example")) == 403
    assert asyncio.run(connect(gw.url)) == 101


def test_operations_routes_and_the_openapi_document(stack: Stack, gw: GatewayProc) -> None:
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["broker_reachable"] is True
        metrics = http.get("/metrics").text
        for name in (
            "tokenlog_gateway_connections",
            "tokenlog_gateway_events_delivered_total",
            "tokenlog_gateway_resumes_total",
            "tokenlog_gateway_client_lag_frames",
            "tokenlog_gateway_slow_client_closes_total",
        ):
            assert name in metrics
        # Every collection is timed (a young one comes every few hundred allocations).
        assert gw.metric("tokenlog_gateway_gc_pause_seconds_count", generation="0") > 0
        # What start-up left (the libraries, mostly) is out of every later collection's walk.
        assert gw.metric("tokenlog_gateway_gc_frozen_objects") > 10_000
        paths = http.get("/openapi.json").json()["paths"]
        for path in (
            "/v1/conversations/{cid}/prompts",
            "/v1/conversations/{cid}/cancel",
            "/v1/conversations/{cid}",
            "/v1/conversations/{cid}/events",
            "/v1/conversations/{cid}/ws",
            "/v1/dev/token",
            "/healthz",
            "/readyz",
            "/metrics",
        ):
            assert path in paths
        token = http.post("/v1/dev/token", json={"user_id": "dev-user"}).json()["token"]
        page = http.get("/")
        assert page.status_code == 200
        assert '<script type="module" src="/static/app.js">' in page.text
        for script in ("/static/app.js", "/static/tokenlog.js"):
            served = http.get(script)
            assert served.status_code == 200
            assert "javascript" in served.headers["content-type"]
    assert stack.tokens.verify(token).user_id == "dev-user"


def test_the_development_token_issuer_is_off_outside_development_mode(stack: Stack) -> None:
    prod = stack.start_gateway("gateway-prod", {"TOKENLOG_GATEWAY_DEV_MODE": "false"})
    response = httpx.post(f"{prod.url}/v1/dev/token", json={"user_id": "x"}, timeout=10)
    assert response.status_code == 404


def test_tokens_never_reach_the_logs(stack: Stack, gw: GatewayProc) -> None:
    token = stack.token("log-watcher")
    cid = unique("conv")

    async def touch() -> None:
        async with Client(gw.url, token) as client:
            await client.prompt(cid, "hi [[tokens=2]]")
            follower = client.follow(cid, transport="ws")
            await follower.once(max_frames=2)
        url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={token}"
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        async with Client(gw.url, token + "x") as forged:
            with pytest.raises(ClientError):
                await forged.prompt(cid, "bad token")

    asyncio.run(touch())
    log = gw.proc.log_path.read_text()
    assert token not in log
    assert token.split(".")[2] not in log
