"""The browser app in Debian's Chromium, driven by Playwright: reload mid-answer, two tabs, offline
and back, stop from another tab. Screenshots go to the test's output folder."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.browser import browser_session
from tests.gateway.stack import GatewayProc, Stack, partition_of
from tests.harness import unique, wait_for
from tests.pipeline.helpers import every_answer_finished, read_transcript

pytestmark = pytest.mark.integration


def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: ``$TOKENLOG_TEST_OUTPUT/screenshots``, else the test's tmp dir."""
    shots = Path(os.environ.get("TOKENLOG_TEST_OUTPUT", tmp_path)) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    return shots


async def wait_js(page: Any, expression: str, *, timeout_ms: float) -> None:
    """``page.wait_for_function`` without its ``eval``, which the app's Content-Security-Policy
    refuses: the expression is polled through the DevTools protocol (``page.evaluate``)."""
    await wait_for(lambda: page.evaluate(expression), timeout_s=timeout_ms / 1000)


async def answer_text(page: Any, index: int = 0) -> str:
    return str(await page.locator(".turn .answer").nth(index).text_content())


async def open_app(browser: Any, gw: GatewayProc, **context_options: Any) -> tuple[Any, Any, str, str]:
    """A new context and page on a new conversation, once the page is live: (context, page, cid, url)."""
    cid = unique("c")
    url = f"{gw.url}/?c={cid}"
    context = await browser.new_context(**context_options)
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_selector("#status.live", timeout=20_000)
    return context, page, cid, url


async def log_text(stack: Stack, cid: str, partition: int) -> dict[str, str]:
    transcript = await read_transcript(stack.bootstrap, partition, [cid], every_answer_finished)
    return {a.started.prompt_text: a.text for a in transcript.answers.values() if a.started is not None}


async def _scenarios(stack: Stack, gw: GatewayProc, chromium: str, shots: Path) -> None:
    async with browser_session(chromium) as browser:
        context, page, cid, url = await open_app(browser, gw, viewport={"width": 900, "height": 640})

        # 1. Reload mid-answer: the answer goes on from where it was, exactly once.
        prompt = "Reload me [[tokens=150]] [[rate=40]]"
        await page.fill("#text", prompt)
        await page.click("#send")
        await wait_js(
            page, "document.querySelector('.turn .answer')?.textContent.length > 40", timeout_ms=30_000
        )
        await page.reload()
        await page.wait_for_selector("#status.live", timeout=20_000)
        await wait_js(
            page,  # tokens arrive again after the reload
            "document.querySelector('.turn .answer')?.textContent.length > 60",
            timeout_ms=30_000,
        )
        await page.screenshot(path=str(shots / "reload-mid-answer.png"))
        # 2. A second tab on the same conversation is in sync.
        second = await context.new_page()
        await second.goto(url)
        await page.wait_for_selector(".turn.completed", timeout=60_000)
        await second.wait_for_selector(".turn.completed", timeout=60_000)
        expected = await log_text(stack, cid, partition_of(cid))
        assert await answer_text(page) == expected[prompt]
        assert await answer_text(second) == expected[prompt]
        assert await page.locator(".turn").count() == 1

        # 3. Offline mid-answer, then online: nothing missing.
        prompt2 = "Offline [[tokens=120]] [[rate=40]]"
        await page.fill("#text", prompt2)
        await page.click("#send")
        await wait_js(
            page, "document.querySelectorAll('.turn .answer')[1]?.textContent.length > 20", timeout_ms=30_000
        )
        await context.set_offline(True)
        await log_text(stack, cid, partition_of(cid))  # the answer ends while the page is offline
        await context.set_offline(False)
        await page.wait_for_selector(".turn.completed >> nth=1", timeout=60_000)
        expected = await log_text(stack, cid, partition_of(cid))
        assert await answer_text(page, 1) == expected[prompt2]

        # 4. Stop from the second tab stops the first tab's answer.
        prompt3 = "Stop me [[tokens=2000]] [[rate=40]]"
        await page.fill("#text", prompt3)
        await page.click("#send")
        await wait_js(
            second,
            "document.querySelectorAll('.turn .answer')[2]?.textContent.length > 20",
            timeout_ms=30_000,
        )
        await second.click("#stop")
        # The first tab is in the background now: Playwright's selector polling, without the eval
        # the CSP refuses, runs on animation frames, which a background tab does not get.
        await wait_js(page, "document.querySelector('.turn.cancelled') !== null", timeout_ms=30_000)
        expected = await log_text(stack, cid, partition_of(cid))
        assert await answer_text(page, 2) == expected[prompt3]
        assert await answer_text(second, 2) == expected[prompt3]

        # The two tabs, for the picture (each on its own: the app refuses to be framed,
        # Content-Security-Policy frame-ancestors 'none').
        await page.screenshot(path=str(shots / "tab-1.png"))
        await second.bring_to_front()
        await second.screenshot(path=str(shots / "tab-2.png"))
        await context.close()


def test_the_browser_app_survives_reload_offline_and_a_second_tab(
    stack: Stack, gw: GatewayProc, chromium: str, tmp_path: Path
) -> None:
    shots = screenshots(tmp_path)
    asyncio.run(_scenarios(stack, gw, chromium, shots))
    assert (shots / "reload-mid-answer.png").stat().st_size > 10_000


async def _pending_prompt_survives_a_crash(stack: Stack, gw: GatewayProc, chromium: str, shots: Path) -> None:
    async with browser_session(chromium) as browser:
        context, page, cid, url = await open_app(browser, gw, viewport={"width": 900, "height": 640})

        # The prompt reaches the gateway (and the log) but every acknowledgement is lost on the way
        # back, as on a connection that dies after sending; then the tab crashes.
        reached = asyncio.Event()

        async def lose_the_ack(route: Any) -> None:
            await route.fetch()  # the gateway accepts it...
            reached.set()
            await route.abort("connectionreset")  # ...and the tab never hears so

        await page.route("**/prompts", lose_the_ack)
        prompt = "Crash before the ack [[tokens=40]] [[rate=40]]"
        await page.fill("#text", prompt)
        await page.click("#send")
        await asyncio.wait_for(reached.wait(), 20)
        assert await page.locator(".turn.pending").count() == 1
        pending = await page.evaluate(f"localStorage.getItem('tokenlog:pending:{cid}')")
        assert prompt in pending
        cdp = await context.new_cdp_session(page)
        crashed = asyncio.ensure_future(page.wait_for_event("crash", timeout=20_000))
        crash = asyncio.ensure_future(cdp.send("Page.crash"))  # never answers: the renderer is gone
        await crashed
        crash.cancel()

        # A new tab on the same conversation re-sends it with the same prompt_id, exactly once.
        again = await context.new_page()
        await again.goto(url)
        await again.wait_for_selector(".turn.completed", timeout=60_000)
        no_pending = f"localStorage.getItem('tokenlog:pending:{cid}') === '[]'"
        await wait_js(again, no_pending, timeout_ms=20_000)
        expected = await log_text(stack, cid, partition_of(cid))
        assert list(expected) == [prompt]  # one answer: the re-sent prompt was a duplicate
        assert await answer_text(again) == expected[prompt]
        assert await again.locator(".turn").count() == 1
        await again.screenshot(path=str(shots / "resent-after-crash.png"))
        await context.close()


def test_a_prompt_whose_ack_was_lost_is_resent_after_a_tab_crash_and_answered_once(
    stack: Stack, gw: GatewayProc, chromium: str, tmp_path: Path
) -> None:
    asyncio.run(_pending_prompt_survives_a_crash(stack, gw, chromium, screenshots(tmp_path)))


# WebSocket blocked (as behind a proxy that refuses upgrades): every socket fails before it opens.
BLOCK_WEBSOCKET = """
window.WebSocket = class extends WebSocket {
  constructor(url, protocols) { super("ws://127.0.0.1:9/blocked", protocols); }
};
"""


async def _sse_fallback(stack: Stack, gw: GatewayProc, chromium: str) -> None:
    async with browser_session(chromium) as browser:
        cid = unique("c")
        url = f"{gw.url}/?c={cid}"
        context = await browser.new_context()
        await context.add_init_script(BLOCK_WEBSOCKET)
        page = await context.new_page()
        await page.goto(url)
        await page.wait_for_selector("#status.live", timeout=30_000)
        assert await page.evaluate("window.tokenlog.transport") == "sse"

        prompt = "Over SSE [[tokens=120]] [[rate=40]]"
        await page.fill("#text", prompt)
        await page.click("#send")
        await wait_js(
            page, "document.querySelector('.turn .answer')?.textContent.length > 20", timeout_ms=30_000
        )
        await page.reload()  # WebSocket fails again; SSE resumes from the saved cursor
        await page.wait_for_selector("#status.live", timeout=30_000)
        assert await page.evaluate("window.tokenlog.transport") == "sse"
        await page.wait_for_selector(".turn.completed", timeout=60_000)
        expected = await log_text(stack, cid, partition_of(cid))
        assert await answer_text(page) == expected[prompt]
        await context.close()


def test_the_javascript_client_falls_back_to_sse_when_websocket_is_blocked(
    stack: Stack, gw: GatewayProc, chromium: str
) -> None:
    asyncio.run(_sse_fallback(stack, gw, chromium))
