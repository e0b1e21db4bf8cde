"""Chaos against the whole system: every part killed, paused or cut off under load, and each run
judged by the checker (tests/chaos/checker.py) — it passes only with zero of every violation.

Every run draws a fresh seed (printed with its row of the table); ``TOKENLOG_CHAOS_SEED=<n>``
replays one: the random sequence's faults and every random choice of the run."""

from __future__ import annotations

import asyncio
import os
import random

import httpx
import pytest

from pipeline.ids import response_id
from schemas.records import ResponseCompleted, ResponseStarted
from tests.chaos.conftest import ROWS, full
from tests.chaos.scenarios import SCENARIOS, mend, sequence, sever
from tests.chaos.world import Plan, Result, Scenario, World, log_of, run
from tests.harness import unique, wait_for

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


def test_a_prompt_the_gateway_cannot_write_is_refused_503_and_a_retry_is_answered_once(world: World) -> None:
    """The gateway cut off from the broker (its link black-holed): a prompt for a conversation
    whose owner it knows is refused ``503 unavailable`` once the write times out — never a 202
    for a record that is not in the log — while the gateway keeps serving; after the link heals,
    the same ``prompt_id`` is accepted and answered exactly once (even if the timed-out write
    reached the log after all)."""
    link = world.broker_link
    assert link is not None
    gw, token = world.gateway.url, world.stack.token(unique("user"))
    headers = {"Authorization": f"Bearer {token}"}
    cid = unique("unavailable")
    url = f"{gw}/v1/conversations/{cid}/prompts"
    quick = {"text": "first [[tokens=3]] [[rate=0]]", "prompt_id": "p0"}
    retry = {"text": "second [[tokens=3]] [[rate=0]]", "prompt_id": "p1"}

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            partitions: list[int] = []

            async def accepted(body: dict[str, str]) -> bool:
                answer = await http.post(url, json=body, headers=headers)
                if answer.status_code == 202:
                    partitions.append(int(answer.json()["partition"]))
                return answer.status_code == 202

            await wait_for(lambda: accepted(quick), timeout_s=60, interval_s=0.5)  # owner known now
            before = link.proxy.cuts
            link.run(sever)
            try:
                refused = await http.post(url, json=retry, headers=headers)
                alive = await http.get(f"{gw}/healthz")
            finally:
                link.run(mend)
            assert link.proxy.cuts > before, "cutting the gateway off cut no connection"
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable", refused.text
            assert alive.status_code == 200
            await wait_for(lambda: accepted(retry), timeout_s=60, interval_s=0.5)
            rid = response_id(cid, "p1")
            partition = partitions[-1]

            async def answered() -> bool:
                events = [e for _, e in await log_of(world.stack.bootstrap, partition, cid, 0)]
                return any(isinstance(e, ResponseCompleted) and e.response_id == rid for e in events)

            await wait_for(answered, timeout_s=60, interval_s=0.5)
            events = [e for _, e in await log_of(world.stack.bootstrap, partition, cid, 0)]
            starts = [e for e in events if isinstance(e, ResponseStarted) and e.response_id == rid]
            assert [e.attempt for e in starts] == [0], "the retried prompt was answered more than once"

    asyncio.run(scenario())
