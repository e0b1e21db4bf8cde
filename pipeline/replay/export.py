"""Columnar export for analysts: Parquet files of turns and of per-answer metrics.

``turns.parquet``: one row per prompt (the turn's fields, ``pipeline/replay/transcript.py``).
``answers.parquet``: one row per answer with the numbers analysts aggregate. Both are documented in
the README ("Replay, audit and export"); times are ``timestamp[ms, UTC]``, durations int64 ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.replay.transcript import Turn

MS = pa.timestamp("ms", tz="UTC")

TURNS = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("prompt_id", pa.string()),
        ("response_id", pa.string()),
        ("user_id", pa.string()),
        ("device_id", pa.string()),
        ("prompt", pa.string()),
        ("model", pa.string()),
        ("status", pa.string()),
        ("finish_reason", pa.string()),
        ("error_class", pa.string()),
        ("cancelled_by", pa.string()),
        ("submitted_at", MS),
        ("started_at", MS),
        ("first_token_at", MS),
        ("ended_at", MS),
        ("ttft_ms", pa.int64()),
        ("duration_ms", pa.int64()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("total_tokens", pa.int32()),
        ("attempts", pa.int32()),
        ("deltas", pa.int32()),
        ("text", pa.string()),
        ("partition", pa.int32()),
        ("first_offset", pa.int64()),
        ("last_offset", pa.int64()),
        ("chain", pa.string()),
        ("violations", pa.list_(pa.string())),
    ]
)

ANSWERS = pa.schema(
    [
        ("response_id", pa.string()),
        ("conversation_id", pa.string()),
        ("user_id", pa.string()),
        ("model", pa.string()),
        ("outcome", pa.string()),
        ("started_at", MS),
        ("ttft_ms", pa.int64()),
        ("duration_ms", pa.int64()),
        ("completion_tokens", pa.int32()),
        ("deltas", pa.int32()),
        ("chars", pa.int32()),
        ("chars_per_s", pa.float64()),
        ("attempts", pa.int32()),
        ("failover", pa.bool_()),
        ("chain_intact", pa.bool_()),
    ]
)


def turns_table(turns: Sequence[Turn]) -> pa.Table:
    rows = [{name: getattr(t, name) for name in TURNS.names} for t in turns]
    return pa.Table.from_pylist(rows, schema=TURNS)


def answers_table(turns: Sequence[Turn]) -> pa.Table:
    rows = []
    for t in turns:
        if t.response_id is None:
            continue
        seconds = (t.duration_ms or 0) / 1000
        rows.append(
            {
                "response_id": t.response_id,
                "conversation_id": t.conversation_id,
                "user_id": t.user_id,
                "model": t.model,
                "outcome": t.status,
                "started_at": t.started_at,
                "ttft_ms": t.ttft_ms,
                "duration_ms": t.duration_ms,
                "completion_tokens": t.completion_tokens or None,
                "deltas": t.deltas,
                "chars": len(t.text),
                "chars_per_s": len(t.text) / seconds if seconds > 0 else None,
                "attempts": t.attempts,
                "failover": t.attempts > 1,
                "chain_intact": t.chain == "intact",
            }
        )
    return pa.Table.from_pylist(rows, schema=ANSWERS)


def write(turns: Sequence[Turn], out: Path) -> list[Path]:
    """``out/turns.parquet`` and ``out/answers.parquet`` (zstd); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in (("turns", turns_table(turns)), ("answers", answers_table(turns))):
        path = out / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        written.append(path)
    return written
