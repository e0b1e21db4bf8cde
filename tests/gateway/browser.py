"""Debian's Chromium for the browser tests, driven by Playwright for Python."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def ensure_chromium() -> str:
    """Debian's Chromium, installed here when missing (the test set-up; fails, never skips)."""
    if not Path(CHROMIUM).exists():
        apt = shutil.which("apt-get")
        assert apt is not None, "Debian's chromium is needed for the browser tests and apt-get is missing"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [apt, "install", "-y", "-q", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run([apt, "update", "-q"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
    assert Path(CHROMIUM).exists()
    return CHROMIUM


@asynccontextmanager
async def browser_session(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
