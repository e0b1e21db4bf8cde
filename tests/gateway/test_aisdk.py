"""Vercel AI SDK compatibility, driven by the real `ai` package from npm against the gateway: its
transport and UI message stream reader from Node, and `useChat` itself in a React page in Chromium."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.client import Client
from tests.gateway.browser import browser_session
from tests.gateway.stack import GatewayProc, Stack, partition_of
from tests.harness import unique
from tests.pipeline.helpers import all_finished, every_answer_finished, read_transcript
from tests.prereqs import require_node_packages

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).parent / "aisdk"


@pytest.fixture(scope="module")
def node() -> str:
    """Node with the `ai` package installed from the lockfile by `make test` (tests/prereqs.py);
    fails, never skips, without them."""
    return require_node_packages()


@pytest.fixture(scope="module")
def use_chat_page(node: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """usechat.jsx (React + `useChat` from @ai-sdk/react) bundled by esbuild into one script."""
    out = tmp_path_factory.mktemp("usechat") / "usechat.js"
    esbuild = DRIVER / "node_modules" / ".bin" / "esbuild"
    subprocess.run(
        [str(esbuild), "usechat.jsx", "--bundle", "--format=iife", "--minify", "--jsx=automatic",
         "--define:process.env.NODE_ENV=\"production\"", f"--outfile={out}", "--log-level=warning"],
        cwd=DRIVER, check=True, timeout=120,
    )  # fmt: skip
    return out.read_text()


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


@contextmanager
def resume_on_cue(node: str, *args: str) -> Iterator[Callable[[], dict[str, Any]]]:
    """``drive.mjs resume-on-cue`` started and loaded (it has printed ``ready``); calling the
    yielded function lets it resume at once and returns what it read."""
    argv = [node, str(DRIVER / "drive.mjs"), "resume-on-cue", *args]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "drive.mjs did not start"

        def go() -> dict[str, Any]:
            out, err = proc.communicate("go\n", timeout=120)
            assert proc.returncode == 0, err[-2000:]
            return dict(json.loads(out.strip().splitlines()[-1]))

        yield go
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_use_chat_resume_streams_the_answer_being_written_and_204_when_none(
    stack: Stack, gw: GatewayProc, node: str
) -> None:
    chat, token = unique("chat"), stack.token("alice")

    async def start() -> dict[str, Any]:
        async with Client(gw.url, token) as client:
            # 150 tokens at 30/s: 5 s to resume in, which is only one HTTP request away (Node
            # has loaded already), so a busy machine does not see the answer end first.
            accepted = await client.prompt(chat, "Resume me [[tokens=150]] [[rate=30]]", prompt_id="p-1")
            follower = client.follow(chat, transport="sse")  # wait until it is being written
            await follower.once(until=lambda f: f.get("type") == "token")
            return accepted

    with resume_on_cue(node, gw.url, token, chat) as resume:
        accepted = asyncio.run(start())
        resumed = resume()
    transcript = asyncio.run(
        read_transcript(stack.bootstrap, accepted["partition"], [chat], all_finished(["p-1"]))
    )
    assert resumed["text"] is not None, "204: the answer had ended before the resume asked"
    assert resumed["text"] == transcript.by_prompt()["p-1"].text
    assert resumed["id"] == accepted["response_id"]
    assert drive(node, "resume", gw.url, token, chat) == {"text": None}
    stranger = httpx.get(
        f"{gw.url}/api/chat/{chat}/stream",
        headers={"Authorization": f"Bearer {stack.token('mallory')}"},
        timeout=10,
    )
    assert stranger.status_code == 403


async def _use_chat_in_react(stack: Stack, gw: GatewayProc, chromium: str, script: str) -> None:
    chat, token = unique("chat"), stack.token("alice")
    html = '<!doctype html><meta charset="utf-8"><div id="root"></div><script src="/usechat.js"></script>'

    async def serve(route: Any) -> None:  # the page on the gateway's origin, as an app would be
        is_script = route.request.url.endswith(".js")
        await route.fulfill(
            status=200,
            content_type="text/javascript" if is_script else "text/html",
            body=script if is_script else html,
        )

    async with browser_session(chromium) as browser:
        page = await browser.new_page()
        await page.route(f"{gw.url}/usechat*", serve)

        def is_resume(response: Any) -> bool:
            return bool(response.url.endswith(f"/api/chat/{chat}/stream"))

        async with page.expect_response(is_resume) as mounted:  # resume: true asks on mount
            await page.goto(f"{gw.url}/usechat?chat={chat}&token={token}")
        assert (await mounted.value).status == 204  # nothing is being written yet
        prompt = "React useChat [[tokens=150]] [[rate=50]]"
        await page.fill("#text", prompt)
        await page.click("#send")
        await page.wait_for_function(
            "document.querySelector('.message.assistant')?.textContent.length > 30", timeout=30_000
        )
        async with page.expect_response(is_resume) as reloaded:  # mid-answer
            await page.reload()
        assert (await reloaded.value).status == 200  # the answer being written, resumed
        await page.wait_for_function(
            "document.querySelector('.message.assistant')?.textContent.length > 30", timeout=30_000
        )
        await page.wait_for_selector("#status[data-status=ready]", timeout=60_000)
        shown = await page.locator(".message.assistant").text_content()
        transcript = await read_transcript(stack.bootstrap, partition_of(chat), [chat], every_answer_finished)
        [answer] = transcript.answers.values()
        assert answer.started is not None
        assert answer.started.prompt_text == prompt
        assert shown == answer.text


def test_use_chat_in_a_react_page_resumes_an_answer_after_a_reload(
    stack: Stack, gw: GatewayProc, chromium: str, use_chat_page: str
) -> None:
    asyncio.run(_use_chat_in_react(stack, gw, chromium, use_chat_page))
