"""The browser app in Debian's Chromium, driven by Playwright: reload mid-answer, two tabs, stop
from another tab, a frozen link and offline and back (the page notices the dead link and resumes
from its cursor). Screenshots go to the test's output folder."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.wire import liveness_s
from infra.process import free_port
from tests.chaos.proxy import FaultProxy
from tests.gateway.browser import browser_session
from tests.gateway.stack import GatewayProc, Stack, partition_of
from tests.harness import unique, wait_for
from tests.pipeline.helpers import Transcript, every_answer_finished, read_transcript

pytestmark = pytest.mark.integration

HEARTBEAT_S = 1.0
"""The heartbeat of the gateway behind the proxy: the page's liveness time is 4 s."""


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


async def log_transcript(stack: Stack, cid: str) -> Transcript:
    """The conversation's answers as the log holds them, once every one has ended."""
    return await read_transcript(stack.bootstrap, partition_of(cid), [cid], every_answer_finished)


async def log_text(stack: Stack, cid: str, partition: int) -> dict[str, str]:
    transcript = await read_transcript(stack.bootstrap, partition, [cid], every_answer_finished)
    return {a.started.prompt_text: a.text for a in transcript.answers.values() if a.started is not None}


@dataclass
class Socket:
    """One WebSocket a page opened and the JSON frames it sent and received."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def subscribe_cursor(self) -> str | None:
        """The cursor its subscribe frame carried; ``"none sent"`` when it never subscribed."""
        subscribes = [frame for frame in self.sent if frame.get("type") == "subscribe"]
        return subscribes[0]["cursor"] if subscribes else "none sent"

    def got(self, kind: str) -> int:
        return sum(frame.get("type") == kind for frame in self.received)


def watch_sockets(page: Any) -> list[Socket]:
    """Every WebSocket the page opens from now on, in order (Playwright's ``websocket`` event)."""
    sockets: list[Socket] = []

    def opened(ws: Any) -> None:
        socket = Socket()
        sockets.append(socket)
        ws.on("framesent", lambda payload: socket.sent.append(orjson.loads(payload)))
        ws.on("framereceived", lambda payload: socket.received.append(orjson.loads(payload)))

    page.on("websocket", opened)
    return sockets


async def _scenarios(stack: Stack, gw: GatewayProc, chromium: str, shots: Path) -> None:
    async with browser_session(chromium) as browser:
        context, page, cid, url = await open_app(browser, gw, viewport={"width": 900, "height": 640})
        sockets = watch_sockets(page)

        # 1. Reload mid-answer: the answer goes on from where it was, exactly once.
        prompt = "Reload me [[tokens=150]] [[rate=40]]"
        await page.fill("#text", prompt)
        await page.click("#send")
        await wait_js(
            page, "document.querySelector('.turn .answer')?.textContent.length > 40", timeout_ms=30_000
        )
        assert await page.locator(".turn.streaming").count() == 1  # mid-answer as the page reloads
        await page.reload()
        await page.wait_for_selector("#status.live", timeout=20_000)
        await wait_js(
            page,  # tokens arrive again after the reload
            "document.querySelector('.turn .answer')?.textContent.length > 60",
            timeout_ms=30_000,
        )
        # ...over the reloaded page's own socket: the answer was still being written.
        await wait_for(lambda: sockets[-1].got("token") > 0, timeout_s=30)
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

        # 3. Stop from the second tab stops the first tab's answer.
        prompt3 = "Stop me [[tokens=2000]] [[rate=40]]"
        await page.fill("#text", prompt3)
        await page.click("#send")
        await wait_js(
            second,
            "document.querySelectorAll('.turn .answer')[1]?.textContent.length > 20",
            timeout_ms=30_000,
        )
        await second.click("#stop")
        # The first tab is in the background now: Playwright's selector polling, without the eval
        # the CSP refuses, runs on animation frames, which a background tab does not get.
        await wait_js(page, "document.querySelector('.turn.cancelled') !== null", timeout_ms=30_000)
        expected = await log_text(stack, cid, partition_of(cid))
        assert await answer_text(page, 1) == expected[prompt3]
        assert await answer_text(second, 1) == expected[prompt3]

        # The two tabs, for the picture (each on its own: the app refuses to be framed,
        # Content-Security-Policy frame-ancestors 'none').
        await page.screenshot(path=str(shots / "tab-1.png"))
        await second.bring_to_front()
        await second.screenshot(path=str(shots / "tab-2.png"))
        await context.close()


def test_the_browser_app_survives_reload_and_a_second_tab(
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
        async with again.expect_response(lambda r: r.url.endswith("/prompts"), timeout=30_000) as resent:
            await again.goto(url)
        response = await resent.value
        assert (response.status, (await response.json())["duplicate"]) == (202, True)
        await again.wait_for_selector(".turn.completed", timeout=60_000)
        no_pending = f"localStorage.getItem('tokenlog:pending:{cid}') === '[]'"
        await wait_js(again, no_pending, timeout_ms=20_000)
        transcript = await log_transcript(stack, cid)
        assert len(transcript.answers) == 1  # one answer: the re-sent prompt was a duplicate
        [answer] = transcript.answers.values()
        assert answer.started is not None
        assert answer.started.prompt_text == prompt
        assert await answer_text(again) == answer.text
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


@dataclass
class Proxied:
    """A gateway with a short heartbeat, and the port of the proxy the page reaches it through
    (its Origin is the gateway's only allowed one)."""

    gw: GatewayProc
    proxy_port: int

    @property
    def port(self) -> int:
        return int(self.gw.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def proxied(stack: Stack) -> Proxied:
    proxy_port = free_port()
    gw = stack.start_gateway(
        "gateway-heartbeat",
        env={
            "TOKENLOG_GATEWAY_HEARTBEAT_S": str(HEARTBEAT_S),
            "TOKENLOG_GATEWAY_ALLOWED_ORIGINS": f"http://127.0.0.1:{proxy_port}",
        },
    )
    return Proxied(gw, proxy_port)


LIVE = "document.querySelector('#status').classList.contains('live')"


async def freeze_and_resume(
    stack: Stack,
    page: Any,
    sockets: list[Socket],
    *,
    freeze: Callable[[], Awaitable[object]],
    heal: Callable[[], Awaitable[object]],
    nth: int,
    attempts: int = 0,
) -> None:
    """The ``nth`` answer is asked for and, mid-answer, the link frozen (``freeze``) until the page
    gives it up (and has opened ``attempts`` more sockets); after ``heal`` the page resumes within
    its liveness time on a new WebSocket that subscribes with the cursor it had, and ends with the
    log's text."""
    cid = await page.evaluate("window.tokenlog.conversationId")
    prompt = f"Answer {nth} across a dead link [[tokens=300]] [[rate=40]]"
    await page.fill("#text", prompt)
    await page.click("#send")
    await wait_js(
        page, f"document.querySelectorAll('.turn .answer')[{nth}]?.textContent.length > 20", timeout_ms=30_000
    )
    before = len(sockets)
    await freeze()
    await wait_js(page, f"!{LIVE}", timeout_ms=60_000)  # the page noticed: nothing came for too long
    assert await page.locator(".turn.streaming").count() == 1  # it was mid-answer
    cursor = await page.evaluate("window.tokenlog.cursor")
    await wait_for(lambda: len(sockets) >= before + attempts, timeout_s=60)
    await heal()

    def resumed() -> list[Socket]:
        """The sockets opened since the freeze that got as far as subscribing."""
        return [s for s in sockets[before:] if s.subscribe_cursor() != "none sent"]

    async def live_again() -> bool:
        return bool(resumed()) and bool(await page.evaluate(LIVE))

    await wait_for(live_again, timeout_s=liveness_s(HEARTBEAT_S))
    socket = resumed()[0]
    assert socket.subscribe_cursor() == cursor
    await page.wait_for_selector(f".turn.completed >> nth={nth}", timeout=60_000)
    assert socket.got("snapshot") == 0  # resumed by cursor, not hydrated anew
    transcript = await log_transcript(stack, cid)
    [answer] = [a for a in transcript.answers.values() if a.started and a.started.prompt_text == prompt]
    assert await answer_text(page, nth) == answer.text
    assert await page.evaluate("window.tokenlog.transport") == "ws"


async def _dead_links(stack: Stack, proxied: Proxied, chromium: str, shots: Path) -> None:
    async with (
        FaultProxy("127.0.0.1", proxied.port, port=proxied.proxy_port) as proxy,
        browser_session(chromium) as browser,
    ):
        cid = unique("c")
        context = await browser.new_context(viewport={"width": 900, "height": 640})
        page = await context.new_page()
        sockets = watch_sockets(page)
        await page.goto(f"{proxy.url}/?c={cid}")
        await page.wait_for_selector("#status.live", timeout=20_000)

        # (a) The TCP link freezes (every byte held, the connections open): no close, no error.
        async def stall() -> None:
            proxy.stall(True)

        async def unstall() -> None:
            proxy.heal()

        await freeze_and_resume(stack, page, sockets, freeze=stall, heal=unstall, nth=0)

        # (b) The browser goes offline (open WebSockets are neither closed nor errored), and stays
        # so while the page tries three new sockets (failures offline do not mean WebSocket is
        # blocked: the page stays on WebSocket).
        async def offline() -> None:
            await context.set_offline(True)

        async def online() -> None:
            await context.set_offline(False)

        await freeze_and_resume(stack, page, sockets, freeze=offline, heal=online, nth=1, attempts=3)
        await page.screenshot(path=str(shots / "resumed-after-dead-links.png"))
        await context.close()


def test_the_browser_app_notices_a_dead_link_and_resumes_from_its_cursor(
    stack: Stack, proxied: Proxied, chromium: str, tmp_path: Path
) -> None:
    asyncio.run(_dead_links(stack, proxied, chromium, screenshots(tmp_path)))
