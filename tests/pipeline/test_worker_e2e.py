"""The generation worker against the real broker, as a real process."""

from __future__ import annotations

import asyncio

import pytest

from infra.settings import TopicSettings
from pipeline.ids import response_id
from pipeline.providers.demo import DemoProvider
from pipeline.settings import DemoSettings
from schemas.answers import Status, Verdict
from schemas.records import PromptSubmitted, ResponseStarted, TokenDelta, now_ms
from tests.harness import ServiceRunner, unique
from tests.pipeline.helpers import all_finished, read_transcript, start_worker, submit

pytestmark = pytest.mark.integration

DEMO = DemoProvider(DemoSettings())


def test_a_prompt_gets_its_full_answer_with_contiguous_seq(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    # Every token its own event (no coalescing): 50 seqs that must follow each other.
    env = {"TOKENLOG_DEMO_TOKENS_PER_S": "0", "TOKENLOG_WORKER_COALESCE_MS": "0"}
    start_worker(services, bootstrap, "w1", unique("group"), env)
    cid = unique("conv")
    prompt = PromptSubmitted(cid, "p-1", "u-1", "What is a cursor? [[tokens=50]]", now_ms())
    [(partition, _)] = asyncio.run(submit(bootstrap, prompt))
    transcript = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p-1"])))
    answer = transcript.by_prompt()["p-1"]
    assert answer.response_id == response_id(cid, "p-1")
    assert answer.status is Status.COMPLETED
    assert answer.text == "".join(DEMO.answer_tokens(prompt))
    deltas = [e for _, e in transcript.events if isinstance(e, TokenDelta)]
    assert [d.seq for d in deltas] == list(range(len(list(DEMO.answer_tokens(prompt)))))
    assert answer.counts[Verdict.ACCEPTED] == len(transcript.events)


def test_the_same_prompt_id_twice_gets_one_answer_even_across_a_restart(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    group = unique("group")
    worker = start_worker(services, bootstrap, "w1", group, {"TOKENLOG_DEMO_TOKENS_PER_S": "0"})
    cid = unique("conv")
    first = PromptSubmitted(cid, "p-dup", "u-1", "Retry me [[tokens=20]]", now_ms(), "tab-1")
    second = PromptSubmitted(cid, "p-dup", "u-1", "Retry me [[tokens=20]]", now_ms(), "tab-2")
    follow = PromptSubmitted(cid, "p-next", "u-1", "And then? [[tokens=5]]", now_ms())
    [(partition, _), _, _] = asyncio.run(submit(bootstrap, first, second, follow))
    asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p-dup", "p-next"])))

    worker.stop()
    start_worker(services, bootstrap, "w2", group, {"TOKENLOG_DEMO_TOKENS_PER_S": "0"})
    third = PromptSubmitted(cid, "p-dup", "u-1", "Retry me [[tokens=20]]", now_ms(), "phone")
    last = PromptSubmitted(cid, "p-last", "u-1", "Last one [[tokens=5]]", now_ms())
    asyncio.run(submit(bootstrap, third, last))
    transcript = asyncio.run(
        read_transcript(bootstrap, partition, [cid], all_finished(["p-dup", "p-next", "p-last"]))
    )
    assert len(transcript.starts("p-dup")) == 1
    assert [s.prompt_id for _, s in transcript.events if isinstance(s, ResponseStarted)] == [
        "p-dup",
        "p-next",
        "p-last",
    ]


def test_two_conversations_in_one_partition_progress_concurrently_and_each_in_order(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    from tests.pipeline.helpers import same_partition_ids

    start_worker(services, bootstrap, "w1", unique("group"))
    (slow, fast), partition = same_partition_ids("conv", 2, provisioned.partitions)
    prompts = [
        PromptSubmitted(slow, "s-1", "u-1", "A long one [[tokens=60]] [[rate=30]]", now_ms()),
        PromptSubmitted(slow, "s-2", "u-1", "Then this [[tokens=5]] [[rate=0]]", now_ms()),
        PromptSubmitted(fast, "f-1", "u-2", "Quick [[tokens=5]] [[rate=0]]", now_ms()),
    ]
    placed = asyncio.run(submit(bootstrap, *prompts))
    assert {p for p, _ in placed} == {partition}
    transcript = asyncio.run(
        read_transcript(bootstrap, partition, [slow, fast], all_finished(["s-1", "s-2", "f-1"]))
    )
    answers = transcript.by_prompt()
    end = {
        pid: max(o for o, e in transcript.events if e.response_id == a.response_id)
        for pid, a in answers.items()
    }
    start = {
        pid: min(o for o, e in transcript.events if e.response_id == a.response_id)
        for pid, a in answers.items()
    }
    assert end["f-1"] < end["s-1"], "the short answer of another conversation waited for the long one"
    assert start["s-2"] > end["s-1"], "the second prompt of a conversation started before the first ended"


def test_cancel_from_a_second_device_stops_the_answer_well_before_its_end(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner
) -> None:
    from schemas.records import CancelRequested, ResponseCancelled

    start_worker(services, bootstrap, "w1", unique("group"), {"TOKENLOG_WORKER_COALESCE_MS": "0"})
    cid = unique("conv")
    # 400 tokens at 20/s: 20 s unless cancelled. The test lasts as long as the cancel takes.
    prompt = PromptSubmitted(
        cid, "p-1", "u-1", "Talk for a while [[tokens=400]] [[rate=20]]", now_ms(), "laptop"
    )
    [(partition, _)] = asyncio.run(submit(bootstrap, prompt))
    asyncio.run(
        read_transcript(
            bootstrap, partition, [cid], lambda t: sum(isinstance(e, TokenDelta) for _, e in t.events) >= 5
        )
    )
    cancel = CancelRequested(
        cid, "x-1", "u-1", now_ms(), response_id=response_id(cid, "p-1"), device_id="phone"
    )
    asyncio.run(submit(bootstrap, cancel))
    transcript = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p-1"])))
    answer = transcript.by_prompt()["p-1"]
    assert answer.status is Status.CANCELLED
    terminal = answer.terminal
    assert isinstance(terminal, ResponseCancelled)
    assert (terminal.cancelled_by_device_id, terminal.cancel_request_id) == ("phone", "x-1")
    deltas = [e.seq for _, e in transcript.events if isinstance(e, TokenDelta)]
    assert deltas == list(range(terminal.last_seq + 1)), "the log's tokens do not end at the cancel"
    assert terminal.last_seq == answer.last_seq
    # Behaviour, not speed: most of the answer was never written (the figure is printed; how
    # fast a cancel lands is bench's business).
    assert 4 <= terminal.last_seq < 200, f"cancel stopped the answer at seq {terminal.last_seq} of 399"
    latency_ms = terminal.cancelled_at - cancel.requested_at
    print(f"\ncancel: stopped at seq {terminal.last_seq} of 399, {latency_ms} ms after the request")

    # Cancelling it again (a finished answer) is a no-op: nothing more is written for it, and
    # the conversation goes on.
    asyncio.run(
        submit(
            bootstrap,
            CancelRequested(cid, "x-2", "u-1", now_ms(), response_id=answer.response_id),
            PromptSubmitted(cid, "p-2", "u-1", "Next [[tokens=3]] [[rate=0]]", now_ms()),
        )
    )
    after = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(["p-1", "p-2"])))
    assert [e for _, e in after.events if e.response_id == answer.response_id] == [
        e for _, e in transcript.events if e.response_id == answer.response_id
    ]
