"""Security at the level of the whole system: per-user connection caps over both transports, and
no message text (prompts or answers) or token in any service's log."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
import websockets

from gateway.client import Client
from tests.gateway.stack import Stack
from tests.harness import unique
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration


def test_a_user_over_the_connection_cap_gets_429_on_both_transports_and_others_are_unaffected(
    stack: Stack,
) -> None:
    capped = stack.start_gateway("gateway-capped", {"TOKENLOG_GATEWAY_MAX_CONNECTIONS_PER_USER": "3"})
    greedy, other = stack.token("greedy"), stack.token("bystander")
    cid = unique("cap")

    async def go() -> tuple[int, int, int, int]:
        async with contextlib.AsyncExitStack() as held, httpx.AsyncClient(timeout=10) as http:
            for _ in range(3):  # up to the cap: SSE streams
                response = await held.enter_async_context(
                    http.stream("GET", f"{capped.url}/v1/conversations/{cid}/events?access_token={greedy}")
                )
                assert response.status_code == 200
            over_sse = await http.get(f"{capped.url}/v1/conversations/{cid}/events?access_token={greedy}")
            ws_url = capped.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token="
            with pytest.raises(websockets.InvalidStatus) as over_ws:
                async with websockets.connect(ws_url + greedy):
                    pass
            async with websockets.connect(ws_url + other) as ws:  # another user is not capped by it
                await ws.send('{"type":"subscribe","cursor":"now"}')
                subscribed = await asyncio.wait_for(ws.recv(), 10)
            code = over_sse.json()["error"]["code"]
        # Streams closed: the user may connect again.
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream("GET", f"{capped.url}/v1/conversations/{cid}/events?access_token={greedy}") as again,
        ):
            after = again.status_code
        assert '"subscribed"' in str(subscribed)
        assert code == "too_many_connections"
        return over_sse.status_code, over_ws.value.response.status_code, after, len(code)

    over_sse, over_ws, after, _ = asyncio.run(go())
    assert (over_sse, over_ws, after) == (429, 429, 200)


def test_no_prompt_or_answer_text_and_no_token_reaches_any_service_log(stack: Stack) -> None:
    gw = stack.start_gateway("gateway-logs")
    secret = unique("prompt-secret")
    token = stack.token("log-reader")
    cid = unique("logs")

    async def go() -> str:
        async with Client(gw.url, token) as client:
            follower = client.follow(cid, transport="sse")
            accepted = await client.prompt(cid, f"{secret} [[tokens=30]] [[rate=200]]", prompt_id="p-1")
            await follower.once(until=lambda f: f.get("type") == "response.completed", timeout_s=60)
            await client.cancel(cid)  # nothing running: answered, logged without text
        transcript = await read_transcript(
            stack.bootstrap, accepted["partition"], [cid], all_finished(["p-1"])
        )
        return transcript.by_prompt()["p-1"].text

    answer = asyncio.run(go())
    pieces = [answer[:40], answer[len(answer) // 2 : len(answer) // 2 + 40]]
    assert all(len(p) == 40 for p in pieces)
    logs = {p.name: p.log_path.read_text(errors="replace") for p in stack.runner.started}
    assert {"worker", "sessions", "gateway-logs"} <= set(logs)
    for name, text in logs.items():
        assert secret not in text, f"the prompt's text is in {name}'s log"
        assert token not in text, f"a token is in {name}'s log"
        assert token.split(".")[2] not in text, f"a token's signature is in {name}'s log"
        for piece in pieces:
            assert piece not in text, f"the answer's text is in {name}'s log"
