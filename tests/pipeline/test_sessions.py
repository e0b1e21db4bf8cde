"""The session-state app materialises conversations from the real log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from infra.settings import TopicSettings
from pipeline.ids import response_id
from schemas.cursor import Cursor, parse
from schemas.records import CancelRequested, PromptSubmitted, TokenDelta, now_ms
from tests.harness import ServiceRunner, unique
from tests.pipeline.helpers import (
    all_finished,
    get_snapshot,
    read_transcript,
    snapshot_at,
    start_sessions,
    start_worker,
    submit,
    turns_from_log,
)

pytestmark = pytest.mark.integration


def _snapshot_turns(snap: dict) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return [(t["prompt_id"], t["status"], t["answer"]) for t in snap["turns"]]


def test_snapshot_of_a_scripted_conversation_equals_the_log_and_names_its_last_event(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path
) -> None:
    start_worker(services, bootstrap, "w1", unique("group"), {"TOKENLOG_WORKER_COALESCE_MS": "0"})
    _, url = start_sessions(services, bootstrap, "s1", unique("sessions"), data_dir=str(tmp_path / "s1"))
    cid = unique("conv")
    ids = ["p-1", "p-2", "p-3", "p-4"]
    [(partition, _), *_] = asyncio.run(
        submit(
            bootstrap,
            PromptSubmitted(cid, "p-1", "u-1", "First [[tokens=12]] [[rate=0]]", now_ms(), "laptop"),
            PromptSubmitted(cid, "p-2", "u-1", "Fails [[tokens=30]] [[fail_after=4]] [[rate=0]]", now_ms()),
            PromptSubmitted(cid, "p-3", "u-1", "Long one [[tokens=300]] [[rate=60]]", now_ms(), "phone"),
        )
    )
    asyncio.run(
        read_transcript(
            bootstrap,
            partition,
            [cid],
            lambda t: (
                sum(
                    isinstance(e, TokenDelta) and e.response_id == response_id(cid, "p-3")
                    for _, e in t.events
                )
                >= 5
            ),
        )
    )
    asyncio.run(
        submit(
            bootstrap,
            CancelRequested(cid, "x-1", "u-1", now_ms(), prompt_id="p-3", device_id="phone"),
            PromptSubmitted(cid, "p-4", "u-1", "Last [[tokens=8]] [[rate=0]]", now_ms()),
        )
    )
    transcript = asyncio.run(read_transcript(bootstrap, partition, [cid], all_finished(ids)))
    last_offset = transcript.events[-1][0]

    snap = asyncio.run(snapshot_at(url, cid, last_offset))
    assert _snapshot_turns(snap) == turns_from_log(transcript)
    assert [t[1] for t in _snapshot_turns(snap)] == ["completed", "failed", "cancelled", "completed"]
    cursor = parse(snap["cursor"])
    assert isinstance(cursor, Cursor)
    assert (cursor.partition, cursor.last_offset) == (partition, last_offset)
    assert snap["owner"] == "u-1"
    assert snap["live"] is None
    assert snap["pending"] == []


def test_an_unknown_conversation_is_a_clear_404(
    bootstrap: str, provisioned: TopicSettings, services: ServiceRunner, tmp_path: Path
) -> None:
    _, url = start_sessions(services, bootstrap, "s1", unique("sessions"), data_dir=str(tmp_path / "s1"))
    status, body = get_snapshot(url, unique("never"))
    assert status == 404
    assert body["error"]["code"] == "unknown_conversation"
