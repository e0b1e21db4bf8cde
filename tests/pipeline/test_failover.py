"""Worker failover: a killed worker's answer is continued, a stale one is fenced."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from infra.settings import TopicSettings
from pipeline.providers.demo import DemoProvider
from pipeline.replay.source import ReplaySource, Selection
from pipeline.replay.verify import Finding, Kind
from pipeline.settings import DemoSettings
from schemas.answers import Status, Verdict
from schemas.records import PromptSubmitted, ResponseResumed, ResumeMode, TokenDelta, now_ms
from tests.harness import ServiceRunner, unique
from tests.pipeline.helpers import Transcript, all_finished, read_transcript, start_worker, submit

pytestmark = pytest.mark.integration

DEMO = DemoProvider(DemoSettings())


def _deltas_at_least(n: int):  # type: ignore[no-untyped-def]
    return lambda t: sum(isinstance(e, TokenDelta) for _, e in t.events) >= n


def _audit(bootstrap: str, cid: str) -> list[Finding]:
    replay, _ = asyncio.run(ReplaySource(bootstrap).replay(Selection(conversation=cid)))
    return replay.findings()


def _assert_exact_continuation(transcript: Transcript, prompt: PromptSubmitted) -> None:
    answer = transcript.by_prompt()[prompt.prompt_id]
    assert answer.status is Status.COMPLETED
    assert answer.text == "".join(DEMO.answer_tokens(prompt)), "the text differs from an uninterrupted run"
    resumed = [e for _, e in transcript.events if isinstance(e, ResponseResumed)]
    assert resumed, "no takeover record"
    assert resumed[-1].mode is ResumeMode.CONTINUE
    assert answer.attempt == resumed[-1].attempt >= 1
    assert answer.counts[Verdict.GAP] == 0


def test_sigkill_mid_answer_the_next_worker_continues_the_same_text(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    group = unique("group")
    first = start_worker(services, bootstrap, "w1", group, {"TOKENLOG_WORKER_COALESCE_MS": "0"})
    cid = unique("conv")
    prompt = PromptSubmitted(cid, "p-1", "u-1", "Tell me everything [[tokens=150]] [[rate=50]]", now_ms())
    [(partition, _)] = asyncio.run(submit(bootstrap, prompt))
    asyncio.run(read_transcript(bootstrap, partition, [cid], _deltas_at_least(30)))
    first.kill()

    start_worker(services, bootstrap, "w2", group, {"TOKENLOG_WORKER_COALESCE_MS": "0"})
    transcript = asyncio.run(
        read_transcript(bootstrap, partition, [cid], all_finished(["p-1"]), timeout_s=90)
    )
    _assert_exact_continuation(transcript, prompt)
    deltas = [e for _, e in transcript.events if isinstance(e, TokenDelta)]
    resumed = next(e for _, e in transcript.events if isinstance(e, ResponseResumed))
    kept = [d for d in deltas if d.attempt == 0 and d.seq <= resumed.resumed_after_seq]
    continued = [d for d in deltas if d.attempt == resumed.attempt]
    assert [d.seq for d in kept + continued] == list(range(len(kept) + len(continued))), "seq not contiguous"
    assert resumed.resumed_after_seq >= 29
    assert _audit(bootstrap, cid) == []  # the successor continued the hash chain


def test_a_stale_worker_resumed_after_its_successor_took_over_is_fenced(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    group = unique("group")
    stale = start_worker(services, bootstrap, "w1", group, {"TOKENLOG_WORKER_COALESCE_MS": "0"})
    cid = unique("conv")
    prompt = PromptSubmitted(cid, "p-1", "u-1", "Keep going [[tokens=200]] [[rate=25]]", now_ms())
    [(partition, _)] = asyncio.run(submit(bootstrap, prompt))
    asyncio.run(read_transcript(bootstrap, partition, [cid], _deltas_at_least(10)))
    assert stale.pid is not None
    os.kill(stale.pid, signal.SIGSTOP)  # presumed dead: no heartbeats, but alive
    try:
        start_worker(services, bootstrap, "w2", group, {"TOKENLOG_WORKER_COALESCE_MS": "0"})
        asyncio.run(
            read_transcript(
                bootstrap,
                partition,
                [cid],
                lambda t: any(isinstance(e, ResponseResumed) for _, e in t.events),
            )
        )
    finally:
        os.kill(stale.pid, signal.SIGCONT)  # it wakes up with overdue tokens to write
    transcript = asyncio.run(
        read_transcript(bootstrap, partition, [cid], all_finished(["p-1"]), timeout_s=90)
    )
    _assert_exact_continuation(transcript, prompt)

    takeover = next(o for o, e in transcript.events if isinstance(e, ResponseResumed))
    stale_after = [e for o, e in transcript.events if o > takeover and e.attempt == 0]
    answer = transcript.by_prompt()["p-1"]
    assert stale_after, "the stale worker wrote nothing after the takeover; the fence was not exercised"
    assert answer.counts[Verdict.FENCED] == len(stale_after)
    # The audit names each of the zombie's writes, with its partition and offset, and nothing else
    # (writes that landed between the successor's read and its takeover record count too).
    findings = _audit(bootstrap, cid)
    assert {f.kind for f in findings} == {Kind.FENCED}
    assert {f.partition for f in findings} == {partition}
    flagged = {f.offset for f in findings}
    after = {o for o, e in transcript.events if o > takeover and e.attempt == 0}
    old_deltas = {o for o, e in transcript.events if e.attempt == 0 and isinstance(e, TokenDelta)}
    assert after <= flagged <= after | old_deltas


def test_sigterm_hands_unfinished_answers_over_and_the_next_worker_continues(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    group = unique("group")
    # One lost attempt would make the prompt a poison prompt: a hand-over must not count as one.
    env = {
        "TOKENLOG_WORKER_COALESCE_MS": "0",
        "TOKENLOG_WORKER_SHUTDOWN_GRACE_S": "0.5",
        "TOKENLOG_WORKER_POISON_ATTEMPTS": "1",
    }
    first = start_worker(services, bootstrap, "w1", group, env)
    cid = unique("conv")
    short = PromptSubmitted(cid, "p-0", "u-1", "Short [[tokens=3]] [[rate=0]]", now_ms())
    prompt = PromptSubmitted(cid, "p-1", "u-1", "Tell me a lot [[tokens=200]] [[rate=40]]", now_ms())
    [(partition, _), _] = asyncio.run(submit(bootstrap, short, prompt))
    asyncio.run(read_transcript(bootstrap, partition, [cid], _deltas_at_least(15)))
    first.stop(grace_s=20)
    assert first.exit_code() == 0, "the worker did not shut down cleanly on SIGTERM"

    start_worker(services, bootstrap, "w2", group, env)
    transcript = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p-0", "p-1"])))
    _assert_exact_continuation(transcript, prompt)
    assert len(transcript.starts("p-0")) == 1, "a finished answer was generated again after the hand-over"
