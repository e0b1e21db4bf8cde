"""Usage analytics per model: pure aggregation of answer metrics into window buckets.

The tokens agent turns each newly applied start or end of an answer into a metric (nothing for
re-delivered events, which the reducers already ignore) and sends it, keyed by model, to a
repartition topic; a second agent folds it into a tumbling-window table, so one worker holds
all of a model's figures.

Active conversations are counted, not listed: a window's value stays the same size however many
conversations it sees (a list of their ids, rewritten at every metric, grew past the changelog's
message limit at about 27,000 conversations a minute). The tokens agent marks a metric
``first_in_window`` when its conversation has had none in the current window
(``Session.active_window``), so each conversation counts once a window.
"""

from __future__ import annotations

from typing import Any

from pipeline.sessions.state import LiveAnswer
from schemas.records import ResponseCancelled, ResponseCompleted, ResponseFailed, ResponseStarted, TokenEvent

OUTCOMES: dict[type[Any], str] = {
    ResponseCompleted: "completed",
    ResponseFailed: "failed",
    ResponseCancelled: "cancelled",
}
KINDS = ("started", "completed", "failed", "cancelled")


def answer_metric(event: TokenEvent, before: LiveAnswer, after: LiveAnswer) -> dict[str, Any] | None:
    """The metric of an answer's start or end as the live answer just applied it, else None."""
    if after is before:
        return None  # re-delivered or not part of the answer
    if isinstance(event, ResponseStarted):
        if after.turn is None or after.turn.response_id != event.response_id:
            return None
        return {"kind": "started", "model": event.model, "conversation_id": event.conversation_id}
    outcome = OUTCOMES.get(type(event))
    ended = after.ended
    if outcome is None or ended is None or ended is before.ended or ended.response_id != event.response_id:
        return None
    return {
        "kind": outcome,
        "model": ended.model,
        "conversation_id": event.conversation_id,
        "tokens": ended.completion_tokens or ended.last_seq + 1,
        "ttft_ms": ended.first_token_at - ended.started_at if ended.first_token_at else None,
        "duration_ms": max(0, ended.ended_at - ended.started_at),
    }


def empty_stats() -> dict[str, Any]:
    return {
        **dict.fromkeys(KINDS, 0),
        "tokens": 0,
        "ttft_count": 0,
        "ttft_sum_ms": 0,
        "ttft_max_ms": 0,
        "duration_count": 0,
        "duration_sum_ms": 0,
        "duration_max_ms": 0,
        "active_conversations": 0,
    }


def add(stats: dict[str, Any] | None, metric: dict[str, Any]) -> dict[str, Any]:
    """``stats`` with ``metric`` counted in (a new dict; the input is left as it was)."""
    out = {**empty_stats(), **(stats or {})}
    out[metric["kind"]] += 1
    if metric.get("first_in_window"):
        out["active_conversations"] += 1
    if metric["kind"] != "started":
        out["tokens"] += metric["tokens"]
        if metric["ttft_ms"] is not None:
            out["ttft_count"] += 1
            out["ttft_sum_ms"] += metric["ttft_ms"]
            out["ttft_max_ms"] = max(out["ttft_max_ms"], metric["ttft_ms"])
        out["duration_count"] += 1
        out["duration_sum_ms"] += metric["duration_ms"]
        out["duration_max_ms"] = max(out["duration_max_ms"], metric["duration_ms"])
    return out


def public(stats: dict[str, Any] | None) -> dict[str, Any]:
    """The stats as served (a window stored before the count replaced the list of conversation
    ids is counted from its list)."""
    full = {**empty_stats(), **(stats or {})}
    full["active_conversations"] += len(full.pop("conversations", ()))
    return full
