"""`make bench` keeps working: a tiny worker throughput run (figures are not judged here)."""

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
