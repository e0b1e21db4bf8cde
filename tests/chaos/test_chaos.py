"""Chaos against the whole system: every part killed, paused or cut off under load, and each run
judged by the checker (tests/chaos/checker.py) — it passes only with zero of every violation.

Every run draws a fresh seed (printed with its row of the table); ``TOKENLOG_CHAOS_SEED=<n>``
replays one: the random sequence's faults and every random choice of the run."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from tests.chaos.conftest import ROWS, full
from tests.chaos.scenarios import SCENARIOS, sequence
from tests.chaos.world import Plan, Result, Scenario, World, run

pytestmark = pytest.mark.integration

RUNS = 3 if full() else 1
PLAN = Plan(conversations=6, followers=6) if full() else Plan()


def fresh_seed() -> int:
    """``TOKENLOG_CHAOS_SEED`` if set (a replay), else a new one."""
    given = os.environ.get("TOKENLOG_CHAOS_SEED")
    return int(given) if given else random.randrange(2**32)


def judged(world: World, name: str, scenario: Scenario, seed: int) -> Result:
    print(f"chaos {name}: seed {seed} (replay: TOKENLOG_CHAOS_SEED={seed})")
    result = asyncio.run(run(world, name, scenario, PLAN, seed))
    ROWS.append(result.row())
    print(
        f"chaos {name}: {result.row()} in {result.seconds} s; expected errors {dict(result.expected_errors)}"
    )
    assert result.tally.clean, f"seed {seed}:\n" + "\n".join(result.tally.details)
    assert result.tally.events_checked > 0
    return result


@pytest.mark.parametrize("run_index", range(RUNS))
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_loses_nothing_and_doubles_nothing(world: World, name: str, run_index: int) -> None:
    judged(world, name, SCENARIOS[name], fresh_seed())


def draw(seed: int) -> list[str]:
    """2 to 3 faults (repeats allowed), a pure function of the seed."""
    rng = random.Random(seed)
    return rng.choices(sorted(SCENARIOS), k=rng.randint(2, 3))


def test_the_draw_is_a_function_of_the_seed_and_varies_with_it() -> None:
    assert draw(7) == draw(7)
    assert len({tuple(draw(seed)) for seed in range(50)}) > 10


@pytest.mark.parametrize("run_index", range(RUNS))
def test_a_random_sequence_of_faults_loses_nothing(world: World, run_index: int) -> None:
    seed = fresh_seed()
    faults = draw(seed)
    print(f"chaos sequence {faults} seed {seed}")
    judged(world, "random:" + "+".join(faults), sequence(faults), seed)
