"""Poison prompts: a prompt that kills every worker that generates it is failed after
``TOKENLOG_WORKER_POISON_ATTEMPTS`` lost attempts, its offset committed, and the conversation
goes on. Real broker, real worker processes; the kill is the test-only ``[[exit_after=N]]``."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from infra.settings import TopicSettings
from pipeline.providers.demo import EXIT_CODE, DemoProvider
from pipeline.settings import DemoSettings
from schemas.answers import Status
from schemas.records import PromptSubmitted, ResponseFailed, ResponseResumed, ResponseStarted, now_ms
from schemas.registry import PROMPTS_TOPIC
from tests.harness import ServiceRunner, unique
from tests.pipeline.helpers import all_finished, read_transcript, start_worker, submit

pytestmark = pytest.mark.integration

DEMO = DemoProvider(DemoSettings())
ATTEMPTS = 3


async def _committed(bootstrap: str, group: str, partition: int) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        committed: int | None = await consumer.committed(TopicPartition(PROMPTS_TOPIC, partition))
        return committed
    finally:
        await consumer.stop()


def test_a_prompt_that_kills_every_worker_fails_as_poison_after_k_deaths_and_the_conversation_goes_on(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    group, cid = unique("group"), unique("conv")
    env = {
        "TOKENLOG_WORKER_COALESCE_MS": "0",
        "TOKENLOG_DEMO_TEST_MARKERS": "true",
        "TOKENLOG_WORKER_POISON_ATTEMPTS": str(ATTEMPTS),
    }
    poison = PromptSubmitted(cid, "p-1", "u-1", "Kill [[tokens=40]] [[exit_after=5]] [[rate=50]]", now_ms())
    after = PromptSubmitted(cid, "p-2", "u-1", "And then? [[tokens=6]] [[rate=0]]", now_ms())
    start_worker(services, bootstrap, "w-0", group, env)
    (partition, _), (_, after_offset) = asyncio.run(submit(bootstrap, poison, after))

    deaths = 0
    worker = services.started[-1]
    for n in range(1, ATTEMPTS + 3):  # bounded: K deaths, then one worker that must survive
        deadline = time.monotonic() + 90
        while worker.running() and time.monotonic() < deadline:
            time.sleep(0.1)
            if deaths == ATTEMPTS:
                break  # the worker after the K-th death: it must not die; checked below
        if worker.running():
            break
        assert worker.exit_code() == EXIT_CODE, f"worker {n - 1} died of something else: {worker.exit_code()}"
        deaths += 1
        worker = start_worker(services, bootstrap, f"w-{n}", group, env, wait_ready=False)

    assert deaths == ATTEMPTS, f"{deaths} workers died on the poison prompt, expected {ATTEMPTS}"
    transcript = asyncio.run(
        read_transcript(bootstrap, partition, [cid], all_finished(["p-1", "p-2"]), timeout_s=90)
    )
    answers = transcript.by_prompt()
    failed = answers["p-1"]
    assert failed.status is Status.FAILED
    assert isinstance(failed.terminal, ResponseFailed)
    assert failed.terminal.error_class == "poison_prompt"
    assert failed.terminal.attempt == ATTEMPTS
    assert [e.attempt for _, e in transcript.events if isinstance(e, ResponseResumed)][-1] == ATTEMPTS
    assert answers["p-2"].status is Status.COMPLETED
    assert answers["p-2"].text == "".join(DEMO.answer_tokens(after))
    # The survivor stays up (it did not run the poison prompt again) and commits past both prompts.
    assert worker.running(), "the worker after the K-th death died too"

    async def committed_past() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (await _committed(bootstrap, group, partition) or 0) <= after_offset:
            if loop.time() > deadline:
                raise TimeoutError("the prompts' offsets were not committed")
            await asyncio.sleep(0.2)

    asyncio.run(committed_past())
    worker.stop(grace_s=20)
    assert worker.exit_code() == 0

    # A new worker in the group does not get the poison prompt again.
    start_worker(services, bootstrap, "w-last", group, env)
    later = PromptSubmitted(cid, "p-3", "u-1", "Still here? [[tokens=4]] [[rate=0]]", now_ms())
    asyncio.run(submit(bootstrap, later))
    final = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p-1", "p-2", "p-3"])))
    assert final.by_prompt()["p-3"].status is Status.COMPLETED

    def takeups(events: list[tuple[int, object]]) -> int:
        kinds = ResponseStarted | ResponseResumed
        return sum(isinstance(e, kinds) and e.response_id == failed.response_id for _, e in events)

    assert takeups(list(final.events)) == takeups(list(transcript.events)), (
        "the poison prompt was taken up again after its offset was committed"
    )


def test_a_worker_stalled_past_its_session_counts_as_lost_and_records_no_hand_over(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    """K=2. Attempt 0's worker is stopped (SIGSTOP) until the group drops it: lost. Attempt 1's
    worker is killed: lost. The stopped worker, woken, is revoked as a non-member (it must record
    no hand-over), rejoins, gets the partition back and fails the answer as poison. Had it recorded
    a hand-over of attempt 0, only one attempt would count as lost and it would go on."""
    import os
    import signal

    group, cid = unique("group"), unique("conv")
    env = {"TOKENLOG_WORKER_COALESCE_MS": "0", "TOKENLOG_WORKER_POISON_ATTEMPTS": "2"}
    stalled = start_worker(services, bootstrap, "w-stalled", group, env)
    prompt = PromptSubmitted(cid, "p-1", "u-1", "Stall [[tokens=1000]] [[rate=20]]", now_ms())
    [(partition, _)] = asyncio.run(submit(bootstrap, prompt))
    asyncio.run(read_transcript(bootstrap, partition, [cid], lambda t: len(t.events) >= 5))
    assert stalled.pid is not None
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        second = start_worker(services, bootstrap, "w-second", group, env)
        asyncio.run(
            read_transcript(
                bootstrap,
                partition,
                [cid],
                lambda t: any(isinstance(e, ResponseResumed) for _, e in t.events),
            )
        )
        second.kill()
    finally:
        os.kill(stalled.pid, signal.SIGCONT)

    transcript = asyncio.run(
        read_transcript(bootstrap, partition, [cid], all_finished(["p-1"]), timeout_s=90)
    )
    answer = transcript.by_prompt()["p-1"]
    assert isinstance(answer.terminal, ResponseFailed), f"the answer ended {answer.status}, not failed"
    assert answer.terminal.error_class == "poison_prompt"
    assert "2 times" in answer.terminal.error_message
    assert stalled.running()
