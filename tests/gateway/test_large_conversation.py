"""Conversation size is not a failure mode: a conversation of more than 5 MB, one answer of 2 MB,
accepted, answered, hydrated, replayed — and the session app, killed and restarted, recovers it.

Before the session tables kept texts in pieces, the session app crashed on its changelog write
(``MessageSizeTooLargeError``) once a conversation's state passed 1 MB, and again at every start."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.client import Client
from infra.settings import TopicSettings
from pipeline.ids import response_id
from tests.gateway.stack import GatewayProc, Stack, partition_of
from tests.harness import SERVICE_HEADERS, ServiceRunner, unique, wait_for
from tests.pipeline.helpers import all_finished, read_transcript, start_sessions, start_worker

pytestmark = pytest.mark.integration

TURNS = 45
PROMPT = "é" * 31_990  # 63,980 bytes of UTF-8: under the gateway's 64 KiB body limit
LONG_TOKENS = 400_000
"""Demo tokens of the long answer: about 2.4 MB of text."""


@pytest.fixture(scope="module")
def big(
    bootstrap: str, provisioned: TopicSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("big")
    runner = ServiceRunner(tmp / "logs")
    try:
        group = unique("group")
        start_worker(
            runner, bootstrap, "worker", group, {"TOKENLOG_DEMO_MARKER_MAX_TOKENS": str(LONG_TOKENS)}
        )
        app_id, data_dir = unique("sessions"), str(tmp / "sessions")
        sessions, url = start_sessions(runner, bootstrap, "sessions", app_id, data_dir=data_dir)
        stack = Stack(bootstrap, runner, sessions_url=url, worker_group=group)
        gateway = stack.start_gateway(
            "gateway",
            {
                "TOKENLOG_GATEWAY_PROMPT_BURST": str(TURNS + 5),
                "TOKENLOG_DEMO_MARKER_MAX_TOKENS": str(LONG_TOKENS),
            },
        )
        yield stack, gateway, sessions, (app_id, data_dir, url)
    finally:
        runner.stop_all()


def _turns(snapshot: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(t["prompt_id"], t["prompt_text"], t["answer"]) for t in snapshot["turns"]]


def test_a_5_mb_conversation_with_a_2_mb_answer_is_answered_hydrated_replayed_and_recovered(
    big: Any, tmp_path: Path
) -> None:
    stack, gateway, sessions, (app_id, data_dir, sessions_url) = big
    assert isinstance(stack, Stack)
    assert isinstance(gateway, GatewayProc)
    cid = unique("big")
    ids = [f"p-{n}" for n in range(TURNS)] + ["p-long"]

    async def converse() -> dict[str, Any]:
        async with Client(gateway.url, stack.token("writer")) as client:
            for n in range(TURNS):
                await client.prompt(cid, f"{PROMPT} {n} [[tokens=3]] [[rate=0]]", prompt_id=ids[n])
            await client.prompt(cid, f"write a lot [[tokens={LONG_TOKENS}]] [[rate=0]]", prompt_id="p-long")
            # Follow it as a client would, to its end.
            follower = client.follow(cid, transport="sse", cursor="beginning")
            long_answer = response_id(cid, "p-long")
            await follower.once(
                until=lambda f: f.get("type") == "response.completed" and f["response_id"] == long_answer,
                timeout_s=240,
            )

            snapshot: dict[str, Any] = {}

            async def all_turns() -> bool:
                nonlocal snapshot
                snapshot = await client.snapshot(cid)
                return len(snapshot["turns"]) == TURNS + 1 and snapshot["live"] is None

            await wait_for(all_turns, timeout_s=120, interval_s=0.5)
            return snapshot

    snapshot = asyncio.run(converse())
    transcript = asyncio.run(
        read_transcript(stack.bootstrap, partition_of(cid), [cid], all_finished(ids), timeout_s=120)
    )
    from_log = {a.started.prompt_id: a.text for a in transcript.answers.values() if a.started is not None}
    turns = _turns(snapshot)
    assert [t[0] for t in turns] == ids
    assert all(t[1].startswith(PROMPT) for t in turns[:TURNS])
    assert [t[2] for t in turns] == [from_log[i] for i in ids]
    size = sum(len(t[1].encode()) + len(t[2].encode()) for t in turns)
    assert size > 5_000_000, size
    assert len(turns[-1][2].encode()) > 2_000_000

    # Replayed from the log: the same turns.
    replay = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", "--conversation", cid, "--bootstrap", stack.bootstrap],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    replayed = [json.loads(line) for line in replay.stdout.splitlines()]
    assert [r["text"] for r in replayed] == [t[2] for t in turns]

    # The session app never refused or failed a write, and survives a SIGKILL with the state.
    metrics = httpx.get(f"{sessions_url}/metrics", headers=SERVICE_HEADERS, timeout=10).text
    assert "tokenlog_sessions_refused_writes_total{" not in metrics
    log = sessions.log_path.read_text(errors="replace")
    assert "MessageSizeTooLarge" not in log
    assert "ProducerSendError" not in log
    sessions.kill()
    _, again = start_sessions(stack.runner, stack.bootstrap, "sessions-again", app_id, data_dir=data_dir)
    recovered: dict[str, Any] = {}

    def served() -> bool:  # ready, then the partition's state is served once the group has settled
        nonlocal recovered
        response = httpx.get(f"{again}/sessions/{cid}", headers=SERVICE_HEADERS, timeout=30)
        recovered = response.json()
        return response.status_code == 200

    asyncio.run(wait_for(served, timeout_s=120, interval_s=0.5))
    assert _turns(recovered) == turns
