"""Chaos against the whole system: every part killed, paused or cut off under load, and each run
judged by the checker (tests/chaos/checker.py) — it passes only with zero of every violation."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos.conftest import ROWS, full
from tests.chaos.scenarios import SCENARIOS, sequence
from tests.chaos.world import Fault, Plan, Result, World, run

pytestmark = pytest.mark.integration

RUNS = 3 if full() else 1
PLAN = Plan(conversations=6, followers=6) if full() else Plan()


def judged(world: World, name: str, fault: Fault, seed: int) -> Result:
    import asyncio

    print(f"chaos {name}: seed {seed}")
    result = asyncio.run(run(world, name, fault, PLAN, seed))
    ROWS.append(result.row())
    print(f"chaos {name}: {result.row()} in {result.seconds} s")
    assert result.tally.clean, "\n".join(result.tally.details)
    assert result.tally.events_checked > 0
    return result


@pytest.mark.parametrize("run_index", range(RUNS))
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_loses_nothing_and_doubles_nothing(world: World, name: str, run_index: int) -> None:
    result = judged(world, name, SCENARIOS[name], random.randrange(2**32))
    assert result.reconnects > PLAN.conversations * PLAN.followers, "every follower reconnected"


@settings(
    max_examples=3 if full() else 1,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
@given(
    faults=st.lists(st.sampled_from(sorted(SCENARIOS)), min_size=2, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_random_sequence_of_faults_loses_nothing(world: World, faults: list[str], seed: int) -> None:
    print(f"chaos sequence {faults} seed {seed}")
    judged(world, "random:" + "+".join(faults), sequence(faults), seed)
