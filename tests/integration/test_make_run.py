"""``make run`` (``python -m infra.run``) as a user runs it, on free ports in a temporary home: every
service SIGKILLed in turn comes back, and a client following an answer meanwhile gets every token
exactly once, the text the session app's snapshot holds at the end."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.client import Client, ClientError, Follower
from gateway.wire import is_event, record_of
from infra.process import ManagedProcess, free_port, pid_alive, tail, wait_until
from infra.settings import REPO_ROOT
from schemas.answers import AnswerFold, Status, Verdict
from schemas.cursor import Cursor, parse
from tests.harness import unique, wait_for

pytestmark = pytest.mark.integration

SERVICES = ("worker", "sessions", "gateway")
PROVIDER_KEY = "sk-only-the-worker-" + secrets.token_hex(8)


@dataclass
class Stack:
    """A running ``python -m infra.run`` and where its services answer."""

    proc: ManagedProcess
    ports: dict[str, int]
    service_token: str

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def console(self) -> str:
        return self.proc.log_path.read_text(errors="replace")

    def pid(self, service: str) -> int:
        """The PID of the service's latest start, as the supervisor printed it."""
        found = re.findall(rf"\[tokenlog\] {service} started \(PID (\d+)\)", self.console())
        assert found, f"{service} was never started:\n{tail(self.proc.log_path)}"
        return int(found[-1])

    def lines(self, needle: str) -> int:
        return sum(needle in line for line in self.console().splitlines())


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TOKENLOG_RUN_LOG_DIR": str(tmp_path / "logs"),
        "TOKENLOG_SESSIONS_DATA_DIR": str(tmp_path / "sessions"),
        "TOKENLOG_WORKER_HTTP_PORT": str(ports["worker"]),
        "TOKENLOG_SESSIONS_PORT": str(ports["sessions"]),
        "TOKENLOG_GATEWAY_PORT": str(ports["gateway"]),
        "TOKENLOG_GATEWAY_SECRET": secrets.token_urlsafe(48),
        "TOKENLOG_SERVICE_TOKEN": (service_token := secrets.token_urlsafe(48)),
        "TOKENLOG_OPENAI_API_KEY": PROVIDER_KEY,  # unused by the demo model: only to see who gets it
        "TOKENLOG_WORKER_SESSION_TIMEOUT_MS": "6000",  # the restarted worker takes over sooner
        "TOKENLOG_TOPIC_PARTITIONS": "3",
    }
    if shutil.which("java") and shutil.which("mvn"):  # make run's own broker, in a home of its own
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        env |= {
            "TOKENLOG_KAFKA_HOME": str(tmp_path / "kafka"),
            "TOKENLOG_KAFKA_PORT": str(free_port()),
            "TOKENLOG_KAFKA_CONTROLLER_PORT": str(free_port()),
        }
    else:  # the session's broker (testcontainers or a cluster)
        env["KAFKA_BOOTSTRAP_SERVERS"] = request.getfixturevalue("bootstrap")
    proc = ManagedProcess(
        "make-run", [sys.executable, "-m", "infra.run"], tmp_path / "make-run.log", env=env, cwd=REPO_ROOT
    )
    proc.start()
    try:
        wait_until(
            lambda: "ready — press Ctrl-C" in proc.log_path.read_text() or not proc.running(),
            120,
            what="make run to be ready",
        )
        assert proc.running(), f"make run exited at start-up:\n{tail(proc.log_path)}"
        yield Stack(proc, ports, service_token)
    finally:
        proc.stop(grace_s=60)


async def _ready(url: str, token: str) -> bool:
    async with httpx.AsyncClient(timeout=2, headers={"Authorization": f"Bearer {token}"}) as http:
        try:
            return (await http.get(f"{url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False


async def _kill_and_wait_back(stack: Stack, service: str) -> None:
    pid = stack.pid(service)
    backs = stack.lines(f"{service} is back")
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: stack.lines(f"{service} is back") > backs, timeout_s=40)
    assert stack.pid(service) != pid
    assert stack.lines(f"{service} exited with code -9 (SIGKILL); restarting in") >= 1
    await wait_for(lambda: _ready(stack.url(service), stack.service_token), timeout_s=20)


async def _follow_to_the_end(follower: Follower, response_id: list[str]) -> None:
    """Follow, resuming from the last cursor after every break, until the answer's end."""

    def done(frame: dict[str, Any]) -> bool:
        return frame.get("type") == "response.completed" and frame.get("response_id") in response_id

    while True:
        try:
            conn = await follower.once(until=done, timeout_s=60)
        except ClientError as exc:
            if exc.status < 500:  # >= 500: the gateway is starting again
                raise
            conn = None
        if conn is not None and conn.ended == "until":
            return
        await asyncio.sleep(0.2)


def _tokens(follower: Follower) -> list[dict[str, Any]]:
    return [f for f in follower.received if f.get("type") == "token"]


async def _scenario(stack: Stack) -> None:
    cid = unique("conv")
    gateway = stack.url("gateway")
    token = await Client.dev_token(gateway, "alice")
    async with Client(gateway, token) as client:
        follower = client.follow(cid, transport="sse")
        response_id: list[str] = []
        following = asyncio.create_task(_follow_to_the_end(follower, response_id))
        await wait_for(lambda: any(f.get("type") == "snapshot" for f in follower.received), timeout_s=20)
        accepted = await client.prompt(cid, "Keep going [[tokens=200]] [[rate=40]]", prompt_id="p-1")
        response_id.append(accepted["response_id"])

        await wait_for(lambda: len(_tokens(follower)) >= 20, timeout_s=30)
        await _kill_and_wait_back(stack, "worker")
        killed_gateway_at = len(_tokens(follower))
        await _kill_and_wait_back(stack, "gateway")
        await _kill_and_wait_back(stack, "sessions")
        await asyncio.wait_for(following, timeout=60)
        assert len(follower.connections) >= 2, "the gateway kill did not break the stream"

        events = [f for f in follower.received if is_event(f)]
        offsets = []
        for frame in events:
            position = parse(frame["cursor"])
            assert isinstance(position, Cursor)
            offsets.append(position.last_offset)
        assert offsets == sorted(set(offsets)), "an event arrived twice or out of order"
        fold = AnswerFold(accepted["response_id"])
        verdicts = [fold.apply(record_of(f)) for f in events if f["response_id"] == accepted["response_id"]]
        assert set(verdicts) == {Verdict.ACCEPTED}, fold.counts
        assert fold.status is Status.COMPLETED
        seqs = [f["seq"] for f in _tokens(follower)]
        assert sorted(seqs) == list(range(len(fold.chunks))), "seq 0..N-1, each once"
        assert killed_gateway_at < len(seqs), "the answer ended before the gateway was killed"
        assert any(f["type"] == "response.resumed" for f in events), "the worker kill was not mid-answer"

        async def snapshot_has_the_answer() -> bool:
            turns = (await client.snapshot(cid)).get("turns", [])
            return any(
                t["response_id"] == accepted["response_id"] and t["status"] == "completed" for t in turns
            )

        await wait_for(snapshot_has_the_answer, timeout_s=30)
        [turn] = [
            t for t in (await client.snapshot(cid))["turns"] if t["response_id"] == accepted["response_id"]
        ]
        assert turn["answer"] == fold.text


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def test_make_run_restarts_each_killed_service_and_a_follower_gets_every_token_once(stack: Stack) -> None:
    began = time.monotonic()
    asyncio.run(_scenario(stack))
    # Only the worker holds the provider key (the live processes, after their restarts too).
    envs = {service: _environ(stack.pid(service)) for service in SERVICES}
    assert envs["worker"]["TOKENLOG_OPENAI_API_KEY"] == PROVIDER_KEY
    assert [s for s in SERVICES if any(k.startswith("TOKENLOG_OPENAI_") for k in envs[s])] == ["worker"]
    assert all(env["TOKENLOG_SERVICE_TOKEN"] for env in envs.values())
    # Ctrl-C stops the stack: every service, then the broker it started.
    pids = [stack.pid(service) for service in SERVICES]
    run_pid = stack.proc.pid
    assert run_pid is not None
    os.kill(run_pid, signal.SIGINT)
    wait_until(lambda: not stack.proc.running(), 60, what="make run to stop on SIGINT")
    assert stack.proc.exit_code() == 0, tail(stack.proc.log_path)
    console = stack.console()
    assert all(f"stopping {service}" in console for service in SERVICES)
    assert not any(pid_alive(pid) for pid in pids)
    print(f"\nrestarts and stop took {time.monotonic() - began:.0f}s")
