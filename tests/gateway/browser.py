"""Debian's Chromium for the browser tests, driven by Playwright for Python."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.prereqs import require_chromium

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def ensure_chromium() -> str:
    """Debian's Chromium, which `make test` installs before pytest starts (tests/prereqs.py);
    missing, it fails the test with how to install it, never skips."""
    return require_chromium()


@asynccontextmanager
async def browser_session(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
