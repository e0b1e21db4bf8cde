"""The whole system as real processes for gateway tests: a generation worker, the session-state
app and gateways, on free ports, against the session's broker."""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.auth import TokenService
from gateway.client import Client, Follower
from gateway.wire import is_event, record_of
from infra.process import ManagedProcess, free_port
from infra.services import http_ok
from schemas.answers import AnswerFold
from schemas.cursor import Cursor, parse
from tests.harness import ServiceRunner
from tests.pipeline.helpers import Transcript


@dataclass
class GatewayProc:
    proc: ManagedProcess
    url: str

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the gateway's /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.MULTILINE)
        total = 0.0
        for match in pattern.finditer(text):
            got = ",".join(sorted((match.group(1) or "").split(","))) if match.group(1) else ""
            if not labels or got == want:
                total += float(match.group(2))
        return total


@dataclass
class Stack:
    bootstrap: str
    runner: ServiceRunner
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    sessions_url: str = ""
    worker_group: str = ""
    """The generation workers' consumer group (a successor joins it to take over)."""

    @property
    def tokens(self) -> TokenService:
        return TokenService(self.secret, 3600)

    def token(self, user: str) -> str:
        return self.tokens.issue(user)

    def start_gateway(self, name: str, env: Mapping[str, str] | None = None) -> GatewayProc:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = self.runner.start(
            name,
            [sys.executable, "-m", "gateway"],
            env={
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "TOKENLOG_GATEWAY_PORT": str(port),
                "TOKENLOG_GATEWAY_SECRET": self.secret,
                "TOKENLOG_GATEWAY_SESSIONS_URL": self.sessions_url or f"http://127.0.0.1:{free_port()}",
                "TOKENLOG_GATEWAY_DEV_MODE": "true",
                "TOKENLOG_GATEWAY_SESSIONS_TIMEOUT_S": "10",  # the session app is busy in a full run
                "TOKENLOG_GATEWAY_SHUTDOWN_GRACE_S": "3",
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            },
            ready=http_ok(f"{url}/readyz"),
            timeout_s=60,
        )
        return GatewayProc(proc, url)


def partition_of(conversation_id: str) -> int:
    """The partition the default partitioner (every producer's) puts a conversation in."""
    from infra.settings import TopicSettings
    from infra.topics import partition_for

    return partition_for(conversation_id, TopicSettings().partitions)


def offset_of(cursor: str) -> int:
    position = parse(cursor)
    assert isinstance(position, Cursor)
    return position.last_offset


def events_of(follower: Follower) -> list[dict[str, Any]]:
    return [f for f in follower.received if is_event(f)]


def folds_of(frames: list[dict[str, Any]]) -> dict[str, AnswerFold]:
    folds: dict[str, AnswerFold] = {}
    for frame in frames:
        record = record_of(frame)
        folds.setdefault(record.response_id, AnswerFold(record.response_id)).apply(record)
    return folds


def assert_matches_log(follower: Follower, transcript: Transcript, *, after: int = -1) -> None:
    """The follower received every event of the log after ``after`` exactly once, in order, and
    folds them into the same text."""
    received = events_of(follower)
    offsets = [offset_of(f["cursor"]) for f in received]
    expected = [o for o, _ in transcript.events if o > after]
    assert offsets == expected, f"received {len(offsets)} events, the log holds {len(expected)}"
    keys = [(f["response_id"], f.get("attempt", 0), f.get("seq")) for f in received if f["type"] == "token"]
    assert len(keys) == len(set(keys)), "a (response_id, seq) arrived twice"
    folds = folds_of(received)
    for response_id, answer in transcript.answers.items():
        assert folds[response_id].text == answer.text
        assert folds[response_id].status == answer.status


async def until_all(followers: list[Follower], done: Callable[[dict[str, Any]], bool], rng: Any) -> None:
    """Each follower reads random short stretches, disconnecting in between, until ``done``."""

    async def run(follower: Follower) -> None:
        for _ in range(500):
            conn = await follower.once(max_frames=rng.randint(1, 12), until=done, timeout_s=60)
            if conn.ended == "until":
                return
            await asyncio.sleep(rng.uniform(0, 0.05))
        raise AssertionError("the answer did not finish within 500 reconnects")

    await asyncio.gather(*(run(f) for f in followers))


__all__ = ["Client", "GatewayProc", "Stack", "assert_matches_log", "events_of", "offset_of", "until_all"]
