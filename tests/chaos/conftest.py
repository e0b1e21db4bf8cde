"""One chaos world per run of the suite, and the table every chaos run ends with."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from infra.broker import LocalBroker
from infra.process import free_port
from infra.settings import TopicSettings
from infra.topics import ensure, topic_specs
from tests.chaos.proxy import ProxyThread
from tests.chaos.world import World
from tests.harness import local_broker_settings

ROWS: list[dict[str, Any]] = []
"""One row per scenario run (``tests.chaos.test_chaos`` appends them)."""


def full() -> bool:
    """``make chaos`` (TOKENLOG_CHAOS=full): more runs, more clients; ``make test`` runs the short form."""
    return os.environ.get("TOKENLOG_CHAOS", "short") == "full"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The chaos world on a broker of its own (the broker scenarios stop and kill it); the gateway
    reaches it through one fault proxy, the workers and the session app through another (each on
    a listener of its own, so either can be cut off alone)."""
    tmp = tmp_path_factory.mktemp("chaos")
    ports = [(free_port(), free_port()) for _ in range(2)]
    broker = LocalBroker(replace(local_broker_settings(tmp / "kafka"), proxied=tuple(ports)))
    links = [ProxyThread("127.0.0.1", bound, port=shown).start() for bound, shown in ports]
    broker.start()
    try:
        asyncio.run(ensure(broker.bootstrap, topic_specs(TopicSettings())))
        w = World.start(broker.bootstrap, tmp, broker=broker, broker_link=links[0], services_link=links[1])
        try:
            yield w
        finally:
            w.stop()
    finally:
        broker.stop()
        for link in links:
            link.stop()


def table(rows: list[dict[str, Any]]) -> str:
    """Scenario, runs, the sums of every count and the seeds (replay one with
    ``TOKENLOG_CHAOS_SEED``), in Markdown."""
    by: dict[str, dict[str, Any]] = {}
    seeds: dict[str, list[str]] = {}
    for row in rows:
        agg = by.setdefault(row["scenario"], {"runs": 0})
        agg["runs"] += 1
        seeds.setdefault(row["scenario"], []).append(str(row["seed"]))
        for key, value in row.items():
            if key not in ("scenario", "seed"):
                agg[key] = agg.get(key, 0) + value
    if not by:
        return ""
    keys = [k for k in next(iter(by.values())) if k != "runs"]
    lines = [
        "| scenario | runs | " + " | ".join(k.replace("_", " ") for k in keys) + " | seeds |",
        "| --- | ---: | " + " | ".join("---:" for _ in keys) + " | --- |",
    ]
    lines += [
        f"| {name} | {agg['runs']} | "
        + " | ".join(f"{agg[k]:,}" for k in keys)
        + f" | {' '.join(seeds[name])} |"
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
