"""The command-line client: interrupted with Ctrl-C mid-answer and started again, it has printed
the answer exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.client import Client
from infra.process import wait_until
from tests.gateway.stack import GatewayProc, Stack
from tests.harness import unique
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration


def _follow(gw: GatewayProc, token: str, cid: str, state: Path, out: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "gateway.client", "--url", gw.url, "--token", token]
    argv += ["follow", cid, "--state", str(state), "--exit-after-answer"]
    # Ctrl-C in a terminal: the CLI must start with SIGINT at its default. A test run started in
    # the background (`cmd &` in a script) has it ignored, a child would inherit that, and Python
    # leaves an inherited SIG_IGN alone: the CLI would not stop. A handled signal is reset to the
    # default across exec, so it is handled here while the CLI starts.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with out.open("wb") as sink:
            return subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_cli_interrupted_mid_answer_and_restarted_prints_the_answer_exactly_once(
    stack: Stack, gw: GatewayProc, tmp_path: Path
) -> None:
    cid, token = unique("conv"), stack.token("alice")
    state, first_out, second_out = tmp_path / "cursor", tmp_path / "first.txt", tmp_path / "second.txt"
    first = _follow(gw, token, cid, state, first_out)
    try:
        wait_until(state.exists, 30, what="the CLI to subscribe")  # the snapshot's cursor is saved

        async def submit() -> dict[str, object]:
            async with Client(gw.url, token) as client:
                return await client.prompt(cid, "Tell me [[tokens=300]] [[rate=100]]", prompt_id="p-1")

        accepted = asyncio.run(submit())
        wait_until(lambda: len(first_out.read_bytes()) > 200, 30, what="part of the answer printed")
        os.kill(first.pid, signal.SIGINT)
        first.wait(timeout=15)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130
    second = _follow(gw, token, cid, state, second_out)
    try:
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()
    transcript = asyncio.run(
        read_transcript(stack.bootstrap, int(str(accepted["partition"])), [cid], all_finished(["p-1"]))
    )
    answer = transcript.by_prompt()["p-1"].text
    printed = first_out.read_text() + second_out.read_text()
    assert printed == f"> Tell me [[tokens=300]] [[rate=100]]\n{answer}\n[completed]\n"
    assert second_out.read_text(), "the restarted CLI printed the rest"
