"""`make bench` keeps working: tiny runs of each benchmark (figures are not judged here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.worker import run
from infra.settings import TopicSettings

pytestmark = pytest.mark.integration


def test_worker_benchmark_runs_end_to_end(bootstrap: str, provisioned: TopicSettings, tmp_path: Path) -> None:
    figures = run(bootstrap, prompts=20, tokens=10, coalesce_ms=0, workdir=tmp_path)
    assert figures["deltas"] == 200
    assert figures["tokens_per_s"] > 0
    assert figures["floor_records_per_s"] > 0


def test_sessions_recovery_benchmark_runs_end_to_end(
    bootstrap: str, provisioned: TopicSettings, tmp_path: Path
) -> None:
    from bench.sessions import measure

    figures = measure(bootstrap, 50, "rocksdb://", tmp_path)  # raises if a recovered snapshot is wrong
    assert figures["restart_caught_up_s"] >= figures["restart_ready_s"] > 0
    assert figures["fresh_caught_up_s"] >= figures["fresh_ready_s"] > 0


def test_gateway_benchmark_runs_end_to_end(
    bootstrap: str, provisioned: TopicSettings, tmp_path: Path
) -> None:
    import asyncio

    from bench.gateway import measure

    figures = asyncio.run(measure(bootstrap, tmp_path, resumes=3, missed=[5, 40], connections=20))
    assert len(figures["points"]) == 2 * 2 * 2
    assert figures["paths_served"]["memory"]["memory"] >= 3 * 2 * 2
    assert figures["paths_served"]["seek"]["seek"] >= 3 * 2  # 40 missed > a 16-event window
    assert figures["idle"]["held_by_gateway"] == 20


def test_replay_benchmark_runs_end_to_end(bootstrap: str, provisioned: TopicSettings) -> None:
    import asyncio

    from bench.replay import measure

    figures = asyncio.run(measure(bootstrap, events=3_000, deltas=20, partitions=2))  # checks every turn
    assert figures["replay_all"]["events"] == figures["written"]["events"] >= 3_000
    assert figures["replay_all"]["events_per_s"] > 0
    assert figures["floor"]["records_per_s"] > 0
