"""The soak's short form: the same rounds and samplers for half a minute (``make soak`` runs it
for real), and its leak rule on made-up series."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.chaos.soak import Series, leaks, plot, soak
from tests.chaos.world import World

pytestmark = pytest.mark.integration


def series(rss: list[float], fds: list[int]) -> Series:
    return Series([float(i) for i in range(len(rss))], rss, fds)


def test_the_leak_rule_flags_memory_or_descriptors_that_keep_rising_and_nothing_flat() -> None:
    flat = series([100.0 + (i % 3) for i in range(30)], [40 + (i % 2) for i in range(30)])
    assert leaks(flat) == []
    warm_then_flat = series([50.0 + min(i, 8) * 10 for i in range(30)], [40] * 30)
    assert leaks(warm_then_flat) == []  # growth in the first third is warm-up
    rising = series([100.0 + 3 * i for i in range(30)], [40] * 30)
    assert leaks(rising)
    assert "memory" in leaks(rising)[0]
    fd_leak = series([100.0] * 30, [40 + 2 * i for i in range(30)])
    assert leaks(fd_leak)
    assert "descriptors" in leaks(fd_leak)[0]


def test_a_short_soak_samples_every_process_and_the_checker_finds_nothing(
    world: World, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    print(f"soak seed {seed}")
    report = asyncio.run(soak(world, 0.5, None, seed))
    assert report["rounds"] >= 1
    assert report["violations"] == []
    assert report["checked"]["events_checked"] > 0
    assert {"gateway", "sessions", "worker-0", "worker-1"} <= set(report["series"])
    assert all(len(s["times"]) >= 5 for s in report["series"].values())
    plot(report, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 10_000
