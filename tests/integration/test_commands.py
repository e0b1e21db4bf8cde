"""The project's own commands, run as real processes: topic listing, broker CLI, and `infra.run`,
which is what `make run` runs after `make setup` (checked with `make -n run`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infra.process import free_port, pid_alive, read_pid, wait_until
from infra.settings import TopicSettings
from infra.topics import describe
from tests.harness import ServiceRunner, unique

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(extra)
    return env


def test_topics_list_shows_the_provisioned_topics(bootstrap: str, provisioned: TopicSettings) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "infra.topics", "list"],
        cwd=REPO,
        env=_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:] if line.strip()}
    assert rows["conversation.prompts"] == rows["conversation.tokens"] == str(provisioned.partitions)


def test_broker_start_with_an_existing_cluster_starts_nothing(bootstrap: str, tmp_path: Path) -> None:
    home = tmp_path / "never"
    out = subprocess.run(
        [sys.executable, "-m", "infra.broker", "start"],
        cwd=REPO,
        env=_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, TOKENLOG_KAFKA_HOME=str(home)),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "using that cluster" in out
    assert not home.exists()


def test_make_run_is_setup_then_infra_run() -> None:
    """`make run` is the .venv's `python -m infra.run` (after setup); the test below runs that."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert planned[-1] == ".venv/bin/python -m infra.run", planned


def test_infra_run_starts_broker_topics_and_services_and_stops_everything_on_ctrl_c(
    services: ServiceRunner, tmp_path: Path
) -> None:
    home = tmp_path / "kafka"
    port = free_port()
    worker_port = free_port()
    sessions_port = free_port()
    gateway_port = free_port()
    proc = services.start(
        "make-run",
        [sys.executable, "-m", "infra.run"],
        env=_env(
            TOKENLOG_KAFKA_HOME=str(home),
            TOKENLOG_KAFKA_PORT=str(port),
            TOKENLOG_KAFKA_CONTROLLER_PORT=str(free_port()),
            TOKENLOG_TOPIC_PARTITIONS="3",
            TOKENLOG_WORKER_HTTP_PORT=str(worker_port),
            TOKENLOG_SESSIONS_PORT=str(sessions_port),
            TOKENLOG_GATEWAY_PORT=str(gateway_port),
            TOKENLOG_SESSIONS_APP_ID=unique("sessions"),
            TOKENLOG_SESSIONS_DATA_DIR=str(tmp_path / "sessions"),
            TOKENLOG_DEMO_TOKENS_PER_S="0",
        ),
        ready=lambda: "ready — press Ctrl-C" in (tmp_path / "logs" / "make-run.log").read_text(),
        timeout_s=180,
    )
    broker_pid = read_pid(home / "kafka.pid", str(home / "server.properties"))
    assert broker_pid is not None

    import asyncio

    state = asyncio.run(describe(f"127.0.0.1:{port}"))
    assert {name: s.partitions for name, s in state.items() if name.startswith("conversation.")} == {
        "conversation.prompts": 3,
        "conversation.tokens": 3,
        "conversation.deadletter": 3,
        "conversation.answers": 3,
        "conversation.owners": 3,
    }

    # The worker make run started answers a prompt.
    from schemas.records import PromptSubmitted, now_ms
    from tests.pipeline.helpers import all_finished, read_transcript, submit

    bootstrap = f"127.0.0.1:{port}"
    cid = unique("conv")
    [(partition, _)] = asyncio.run(
        submit(bootstrap, PromptSubmitted(cid, "p", "u", "hi [[tokens=5]]", now_ms()))
    )
    transcript = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p"])))
    assert "generation worker metrics: http://127.0.0.1:" in proc.log_path.read_text()
    # ... and the session-state app make run started serves its snapshot.
    from tests.pipeline.helpers import snapshot_at

    snap = asyncio.run(snapshot_at(f"http://127.0.0.1:{sessions_port}", cid, transcript.events[-1][0]))
    assert [t["status"] for t in snap["turns"]] == ["completed"]
    # ... and the gateway (development mode) takes a prompt and streams its answer.
    from gateway.client import Client

    async def through_the_gateway() -> list[str]:
        url = f"http://127.0.0.1:{gateway_port}"
        async with Client(url, await Client.dev_token(url, "make-run-user")) as client:
            other = unique("conv")
            follower = client.follow(other, transport="sse")
            await follower.once(until=lambda f: f["type"] == "snapshot")
            await client.prompt(other, "hello [[tokens=5]]", prompt_id="p-1")
            await follower.once(until=lambda f: f["type"] == "response.completed")
            return [f["type"] for f in follower.received]

    kinds = asyncio.run(through_the_gateway())
    assert kinds[0] == "snapshot"
    assert kinds[-1] == "response.completed"
    assert "token" in kinds  # five tokens, coalesced by the worker into fewer deltas
    assert f"gateway (open this): http://127.0.0.1:{gateway_port}/" in proc.log_path.read_text()

    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGINT)
    wait_until(lambda: not proc.running(), 60, what="make run to exit")
    assert proc.exit_code() == 0
    assert not pid_alive(broker_pid)
    log = proc.log_path.read_text()
    assert "stopping worker" in log
    assert "stopping sessions" in log
    assert "stopping gateway" in log
    assert "kafka stopped" in log
