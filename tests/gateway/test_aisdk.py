"""Vercel AI SDK compatibility, driven by the real `ai` package from npm (its transport and its
UI message stream reader, as `useChat` uses them) against the gateway."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.client import Client
from tests.gateway.stack import GatewayProc, Stack, partition_of
from tests.harness import unique
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).parent / "aisdk"


@pytest.fixture(scope="module")
def node() -> str:
    """Node with the `ai` package installed from the lockfile (fails, never skips, without Node)."""
    found = shutil.which("node")
    npm = shutil.which("npm")
    assert found is not None, "Node.js is needed for the AI SDK compatibility test"
    assert npm is not None, "npm is needed for the AI SDK compatibility test"
    if not (DRIVER / "node_modules" / "ai").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=DRIVER, check=True, timeout=300
        )
    return found


def drive(node: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(DRIVER / "drive.mjs"), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_use_chat_sends_a_message_and_reads_the_answer_as_a_ui_message_stream(
    stack: Stack, gw: GatewayProc, node: str
) -> None:
    chat, token = unique("chat"), stack.token("alice")
    got = drive(node, "send", gw.url, token, chat, "msg-1", "Hello SDK [[tokens=40]] [[rate=200]]")
    transcript = asyncio.run(
        read_transcript(stack.bootstrap, partition_of(chat), [chat], all_finished(["msg-1"]))
    )
    assert got["text"] == transcript.by_prompt()["msg-1"].text
    assert got["parts"] == ["text"], got["parts"]  # one text part, no error part
    # The same message sent again (a retry) is the same answer, not a second one.
    again = drive(node, "send", gw.url, token, chat, "msg-1", "Hello SDK [[tokens=40]] [[rate=200]]")
    assert again["text"] == got["text"]
    assert (
        len(
            asyncio.run(
                read_transcript(stack.bootstrap, partition_of(chat), [chat], all_finished(["msg-1"]))
            ).starts("msg-1")
        )
        == 1
    )


def test_use_chat_resume_streams_the_answer_being_written_and_204_when_none(
    stack: Stack, gw: GatewayProc, node: str
) -> None:
    chat, token = unique("chat"), stack.token("alice")

    async def start() -> dict[str, Any]:
        async with Client(gw.url, token) as client:
            accepted = await client.prompt(chat, "Resume me [[tokens=150]] [[rate=100]]", prompt_id="p-1")
            follower = client.follow(chat, transport="sse")  # wait until it is being written
            await follower.once(until=lambda f: f.get("type") == "token")
            return accepted

    accepted = asyncio.run(start())
    resumed = drive(node, "resume", gw.url, token, chat)
    transcript = asyncio.run(
        read_transcript(stack.bootstrap, accepted["partition"], [chat], all_finished(["p-1"]))
    )
    assert resumed["text"] == transcript.by_prompt()["p-1"].text
    assert resumed["id"] == accepted["response_id"]
    assert drive(node, "resume", gw.url, token, chat) == {"text": None}
    stranger = httpx.get(
        f"{gw.url}/api/chat/{chat}/stream",
        headers={"Authorization": f"Bearer {stack.token('mallory')}"},
        timeout=10,
    )
    assert stranger.status_code == 403
