"""One running system per test module: a generation worker, the session-state app and two
gateways (every test uses its own conversation ids)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.settings import TopicSettings
from tests.gateway.browser import ensure_chromium
from tests.gateway.stack import GatewayProc, Stack
from tests.harness import ServiceRunner, unique
from tests.pipeline.helpers import start_sessions, start_worker


@pytest.fixture(scope="module")
def stack(
    bootstrap: str, provisioned: TopicSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    runner = ServiceRunner(tmp / "logs")
    try:
        group = unique("group")
        start_worker(runner, bootstrap, "worker", group, {"TOKENLOG_WORKER_COALESCE_MS": "0"})
        _, sessions_url = start_sessions(
            runner, bootstrap, "sessions", unique("sessions"), data_dir=str(tmp / "sessions")
        )
        yield Stack(bootstrap, runner, sessions_url=sessions_url, worker_group=group)
    finally:
        runner.stop_all()


@pytest.fixture(scope="module")
def gw(stack: Stack) -> GatewayProc:
    return stack.start_gateway("gateway-a")


@pytest.fixture(scope="module")
def gw2(stack: Stack) -> GatewayProc:
    return stack.start_gateway("gateway-b")


@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_chromium()
