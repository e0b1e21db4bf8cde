"""The gateway refuses a prompt whose demo markers exceed the caps of its own settings (400
``invalid_marker``) on every route that takes a prompt, and keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

from infra.settings import TopicSettings
from tests.gateway.stack import GatewayProc, Stack
from tests.harness import ServiceRunner, unique

pytestmark = pytest.mark.integration

CAPPED = {
    "TOKENLOG_DEMO_MARKER_MAX_TOKENS": "100",
    "TOKENLOG_DEMO_MARKER_MAX_RATE": "50",
    "TOKENLOG_GATEWAY_OWNER_WAIT_S": "1",  # nothing here can settle a new conversation's owner
}
"""Caps set for this gateway alone: the refusals below come from its settings, not the defaults."""


@pytest.fixture(scope="module")
def capped(
    bootstrap: str, provisioned: TopicSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, GatewayProc]]:
    runner = ServiceRunner(tmp_path_factory.mktemp("markers") / "logs")
    try:
        stack = Stack(bootstrap, runner)  # no worker, no session app: only the gateway's checks
        yield stack, stack.start_gateway("gateway-capped", CAPPED)
    finally:
        runner.stop_all()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Long [[tokens=101]]", "at most 100"),
        ("Slow [[tokens=2]] [[rate=0.001]]", "between 1 and 50"),
        ("Crash [[exit_after=1]]", "test-only"),
        ("Odd [[tokens=1.5]]", "whole number"),
    ],
)
def test_the_json_api_answers_a_prompt_over_the_marker_caps_with_400_invalid_marker(
    capped: tuple[Stack, GatewayProc], text: str, says: str
) -> None:
    stack, gw = capped
    auth = {"Authorization": f"Bearer {stack.token('alice')}"}
    cid = unique("conv")
    response = httpx.post(f"{gw.url}/v1/conversations/{cid}/prompts", json={"text": text}, headers=auth)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["action"]) == ("invalid_marker", "stop")
    assert says in error["message"]
    within = httpx.post(
        f"{gw.url}/v1/conversations/{cid}/prompts",
        json={"text": "Fine [[tokens=100]] [[rate=50]]"},
        headers=auth,
        timeout=30,
    )
    # Past the marker check. With no session app and no worker here, nothing can settle who owns
    # the new conversation, so the gateway says so (503, retry) rather than guess.
    assert (within.status_code, within.json()["error"]["code"]) == (503, "unavailable"), within.text


def test_a_websocket_prompt_frame_over_the_caps_gets_an_error_frame_and_the_socket_stays_open(
    capped: tuple[Stack, GatewayProc],
) -> None:
    stack, gw = capped
    cid = unique("conv")
    url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={stack.token('bob')}"

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(url) as ws:
            await ws.send(orjson.dumps({"type": "prompt", "ref": "q", "text": "x [[tokens=5000]]"}).decode())
            refused = orjson.loads(await ws.recv())
            await ws.send(orjson.dumps({"type": "ping", "id": 1}).decode())
            return [refused, orjson.loads(await ws.recv())]

    refused, pong = asyncio.run(scenario())
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "invalid_marker", "q")
    assert pong["type"] == "pong"


def test_api_chat_answers_a_prompt_over_the_caps_with_400_invalid_marker(
    capped: tuple[Stack, GatewayProc],
) -> None:
    stack, gw = capped
    body = {
        "id": unique("chat"),
        "messages": [{"role": "user", "id": "m-1", "parts": [{"type": "text", "text": "y [[rate=5000]]"}]}],
    }
    response = httpx.post(
        f"{gw.url}/api/chat",
        json=body,
        headers={"Authorization": f"Bearer {stack.token('carol')}"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_marker"
    assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200
