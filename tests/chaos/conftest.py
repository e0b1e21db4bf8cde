"""One chaos world per run of the suite, and the table every chaos run ends with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import TopicSettings
from tests.chaos.world import World

ROWS: list[dict[str, Any]] = []
"""One row per scenario run (``tests.chaos.test_chaos`` appends them)."""


def full() -> bool:
    """``make chaos`` (TOKENLOG_CHAOS=full): more runs, more clients; ``make test`` runs the short form."""
    return os.environ.get("TOKENLOG_CHAOS", "short") == "full"


@pytest.fixture(scope="module")
def world(
    bootstrap: str, provisioned: TopicSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    w = World.start(bootstrap, tmp_path_factory.mktemp("chaos"))
    try:
        yield w
    finally:
        w.stop()


def table(rows: list[dict[str, Any]]) -> str:
    """Scenario, runs and the sums of every count (Markdown)."""
    by: dict[str, dict[str, Any]] = {}
    for row in rows:
        agg = by.setdefault(row["scenario"], {"runs": 0})
        agg["runs"] += 1
        for key, value in row.items():
            if key != "scenario":
                agg[key] = agg.get(key, 0) + value
    if not by:
        return ""
    keys = [k for k in next(iter(by.values())) if k != "runs"]
    lines = [
        "| scenario | runs | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in keys) + " |",
    ]
    lines += [
        f"| {name} | {agg['runs']} | " + " | ".join(f"{agg[k]:,}" for k in keys) + " |"
        for name, agg in by.items()
    ]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    text = table(ROWS)
    if not text:
        return
    terminalreporter.section("chaos: what the log holds against what every client received")
    terminalreporter.write_line(text)
    out = os.environ.get("TOKENLOG_TEST_OUTPUT")
    if out:
        path = Path(out) / "chaos.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        terminalreporter.write_line(f"(also in {path})")
