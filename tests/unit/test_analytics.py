from __future__ import annotations

from pipeline.sessions.analytics import add, answer_metric, public
from pipeline.sessions.state import LiveAnswer, evolve_live
from schemas.records import ResponseCompleted, ResponseStarted, TokenDelta, TokenEvent

C, R = "c-1", "r-1"


def test_an_answer_yields_a_start_and_an_end_metric_once() -> None:
    events: list[TokenEvent] = [
        ResponseStarted(C, R, "p-1", "u-1", "q", "demo", 1000),
        TokenDelta(C, R, 0, "a", 1250),
        TokenDelta(C, R, 1, "b", 1300),
        ResponseCompleted(C, R, 1, 2000),
    ]
    live, metrics = LiveAnswer(), []
    for offset, event in enumerate(events):
        after = evolve_live(live, event, offset)
        metric = answer_metric(event, live, after)
        if metric:
            metrics.append(metric)
        live = after
    # Re-delivery of the end applies nothing, so it counts nothing.
    assert answer_metric(events[-1], live, evolve_live(live, events[-1], 3)) is None
    assert [m["kind"] for m in metrics] == ["started", "completed"]
    assert metrics[1] == {
        "kind": "completed",
        "model": "demo",
        "conversation_id": C,
        "tokens": 2,
        "ttft_ms": 250,
        "duration_ms": 1000,
    }
    # The tokens agent marks a conversation's first metric of a window (Session.active_window).
    stats = public(add(add(None, {**metrics[0], "first_in_window": True}), metrics[1]))
    assert (stats["started"], stats["completed"], stats["tokens"], stats["active_conversations"]) == (
        1,
        1,
        2,
        1,
    )
    assert (stats["ttft_count"], stats["ttft_sum_ms"], stats["duration_max_ms"]) == (1, 250, 1000)


def test_a_window_counts_active_conversations_without_growing_with_them() -> None:
    """A window's value is rewritten at every metric: it must not hold one id per conversation."""
    import orjson

    stats: dict[str, object] | None = None
    sizes = []
    for n in range(2000):
        metric = {"kind": "started", "model": "m", "conversation_id": f"c-{n:05d}", "first_in_window": True}
        stats = add(stats, metric)
        sizes.append(len(orjson.dumps(stats)))
    assert public(stats)["active_conversations"] == 2000
    assert sizes[-1] - sizes[10] <= 4  # the digits of the counts, nothing per conversation


def test_a_window_stored_with_its_list_of_conversation_ids_still_counts_them() -> None:
    old = {"started": 2, "conversations": ["c-1", "c-2"]}
    assert (
        public(
            add(old, {"kind": "started", "model": "m", "conversation_id": "c-3", "first_in_window": True})
        )["active_conversations"]
        == 3
    )
