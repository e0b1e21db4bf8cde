"""The resume splice, the hub's coverage rules and the connection state machine, without I/O."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.catchup import JUMP, MAX_TAKE, plan
from gateway.connection import Connection, Control, State
from gateway.entry import Entry, Packed, entry_of, pack, unpack
from gateway.errors import SlowClient
from gateway.hub import Hub, HubLimits
from gateway.merge import Gap, Merger, merge
from gateway.service import FIRST_STRETCH, STRETCH, Stretch, from_window
from schemas.records import (
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
    Usage,
)

CID = "conv-1"


def started(offset: int, rid: str = "r-1", attempt: int = 0) -> Entry:
    event = ResponseStarted(CID, rid, "p-1", "alice", "hi", "m", 0, attempt=attempt)
    return entry_of(event, epoch="e", partition=0, offset=offset)


def delta(offset: int, seq: int, rid: str = "r-1", attempt: int = 0) -> Entry:
    return entry_of(TokenDelta(CID, rid, seq, f"t{seq}", 0, attempt), epoch="e", partition=0, offset=offset)


def offsets(entries: list[Entry]) -> list[int]:
    return [e.offset for e in entries]


# ------------------------------------------------------------------ merge


@pytest.mark.parametrize(
    ("after", "splice", "caught", "buffered", "expected"),
    [
        # catch-up then live, nothing doubled at the splice
        (1, 5, [2, 4, 5], [7, 9], [2, 4, 5, 7, 9]),
        # a catch-up read past the splice: the buffer has those, they are dropped from the catch-up
        (1, 5, [2, 4, 5, 7], [7, 9], [2, 4, 5, 7, 9]),
        # the same record read twice
        (1, 5, [2, 2, 4], [7], [2, 4, 7]),
        # events at or before the cursor are never re-sent
        (4, 5, [2, 4, 5], [7], [5, 7]),
        # a client ahead of this gateway's reader: buffered events it has are dropped
        (8, 5, [], [7, 8, 9], [9]),
        # nothing missed at all
        (5, 5, [], [6], [6]),
    ],
)
def test_merge_orders_and_deduplicates_catch_up_and_buffered_live(
    after: int, splice: int, caught: list[int], buffered: list[int], expected: list[int]
) -> None:
    seqs = {o: i for i, o in enumerate(sorted({*caught, *buffered}))}  # one answer, seq by offset

    def make(o: int) -> Entry:
        return delta(o, seqs[o])

    result = merge(after, splice, [make(o) for o in caught], [make(o) for o in buffered], expected=None)
    assert offsets(result) == expected


def test_merge_reports_offsets_the_index_expected_but_the_read_missed() -> None:
    with pytest.raises(Gap, match="missed"):
        merge(1, 9, [delta(3, 0), delta(9, 2)], [], expected=[3, 6, 9])
    assert offsets(merge(1, 9, [delta(3, 0), delta(6, 1), delta(9, 2)], [], expected=[3, 6, 9])) == [3, 6, 9]


def test_merge_reports_an_incomplete_read_and_a_seq_hole_as_gaps() -> None:
    with pytest.raises(Gap, match="did not reach"):
        merge(1, 9, [delta(3, 0)], [], complete=False)
    with pytest.raises(Gap, match="jumps"):
        merge(1, 9, [delta(3, 0), delta(4, 1)], [delta(10, 3)])
    with pytest.raises(Gap, match="out of order"):
        merge(1, 9, [delta(5, 0), delta(3, 1)], [])


@given(
    st.lists(st.integers(2, 60), min_size=1, max_size=30, unique=True).map(sorted),
    st.lists(st.integers(1, 60), max_size=6).map(sorted),
    st.data(),
)
def test_a_catch_up_merged_stretch_by_stretch_equals_the_whole_merge_or_stops_before_a_hole(
    wanted: list[int], cuts: list[int], data: st.DataObject
) -> None:
    """Passing a long catch-up on as it is read hands out exactly what the one-shot merge would,
    and when the read lost an expected offset nothing at or after that offset has gone out."""
    lost = data.draw(st.sampled_from([None, *wanted]))
    caught = [delta(o, i) for i, o in enumerate(wanted) if o != lost]
    merger = Merger(1, 60, wanted)
    handed: list[Entry] = []
    with_hole = False
    try:
        start = 0
        for through in [*cuts, 60]:
            stretch = [e for e in caught[start:] if e.offset <= through]
            start += len(stretch)
            handed += merger.feed(stretch, through)
        handed += merger.finish([delta(70, len(wanted))])
    except Gap:
        with_hole = True
    if lost is None:
        assert not with_hole
        assert offsets(handed) == [*wanted, 70]
        assert offsets(handed) == offsets(merge(1, 60, caught, [delta(70, len(wanted))], expected=wanted))
    else:
        assert with_hole
        assert all(o < lost for o in offsets(handed))


@pytest.mark.parametrize(
    ("targets", "index", "position", "seek", "take"),
    [
        # close together: read through from where the consumer is, up to the last of the run
        ([10, 20, 30], 0, 5, None, 26),
        # the next target far ahead: seek to it and take just it
        ([10, 11 + JUMP + 1], 1, 11, 11 + JUMP + 1, 1),
        # a run of close targets after a seek ends where the next gap is too wide
        ([5000, 5100, 5200, 9000], 0, 0, 5000, 201),
        # a run longer than one take is taken in parts
        (list(range(0, 3 * MAX_TAKE, 2)), 0, 0, None, MAX_TAKE),
    ],
)
def test_a_targeted_read_seeks_over_wide_gaps_and_takes_only_up_to_the_last_wanted_offset(
    targets: list[int], index: int, position: int, seek: int | None, take: int
) -> None:
    assert plan(targets, index, position) == (seek, take)


def test_merge_accepts_a_takeover_that_restarts_or_continues_the_seq() -> None:
    resumed = entry_of(
        ResponseResumed(CID, "r-1", 1, 0, ResumeMode.CONTINUE, 0), epoch="e", partition=0, offset=5
    )
    result = merge(
        0, 9, [delta(1, 0), delta(2, 1), resumed, delta(6, 1, attempt=1), delta(7, 2, attempt=1)], []
    )
    assert offsets(result) == [1, 2, 5, 6, 7]


# ------------------------------------------------------------------ hub


class Sink:
    def __init__(self) -> None:
        self.got: list[Entry] = []

    def deliver(self, entry: Entry) -> None:
        self.got.append(entry)


def test_a_conversation_the_hub_never_saw_resumes_from_memory_with_nothing_to_read() -> None:
    hub = Hub()
    hub.start(0, 100)
    hub.publish(0, "other", delta(100, 0))
    assert hub.from_memory(CID, 0, 99, 100) == []
    assert hub.offsets(CID, 0, 99, 100) == []
    assert hub.from_memory(CID, 0, 50, 100) is None, "before the reader started: not known"


def test_the_window_serves_what_it_covers_and_the_index_what_the_window_lost() -> None:
    hub = Hub(HubLimits(window_events=3, index_offsets=100))
    hub.start(0, 10)
    for i, offset in enumerate((10, 12, 14, 16, 18)):
        hub.publish(0, CID, delta(offset, i))
    window = hub.from_memory(CID, 0, 13, 18)
    assert window is not None
    assert offsets([unpack(p) for p in window]) == [14, 16, 18]
    assert hub.from_memory(CID, 0, 11, 18) is None, "offset 12 was evicted from the window"
    assert hub.offsets(CID, 0, 11, 18) == [12, 14, 16, 18]
    assert hub.offsets(CID, 0, 9, 16) == [10, 12, 14, 16]


def test_a_packed_entry_unpacks_to_an_equal_entry_for_every_event_type() -> None:
    events: list[TokenEvent] = [
        ResponseStarted(CID, "r-1", "p-1", "alice", "hi", "m", 5, attempt=1, prev_hash=b"a", hash=b"b"),
        TokenDelta(CID, "r-1", 3, "tok", 6, 1, b"b", b"c"),
        ResponseCompleted(CID, "r-1", 3, 7, "length", Usage(1, 2, 3), 1, b"c", b"d"),
        ResponseFailed(CID, "r-1", 3, "Timeout", 8, "boom", True, 1, b"c", b"d"),
        ResponseCancelled(CID, "r-1", 3, 9, "k-1", "alice", "d-1", 1, b"c", b"d"),
        ResponseResumed(CID, "r-1", 2, 3, ResumeMode.CONTINUE, 10, prev_hash=b"c", hash=b"d"),
    ]
    for offset, event in enumerate(events):
        entry = entry_of(event, epoch="e", partition=0, offset=offset)
        back = unpack(pack(entry))
        assert (back.offset, back.event, back.cursor, back.json) == (
            entry.offset,
            entry.event,
            entry.cursor,
            entry.json,
        )
        assert back.sse == entry.sse


def test_the_window_holds_nothing_the_garbage_collector_walks() -> None:
    hub = Hub()
    hub.start(0, 0)
    for offset in range(50):
        hub.publish(0, CID, delta(offset, offset))
    gc.collect()
    conv = hub.conversations[CID]
    tracked = [packed for packed in conv.entries if gc.is_tracked(packed)]
    assert len(conv.entries) == 50
    assert tracked == [], "a full collection would walk every one"
    window = hub.from_memory(CID, 0, 44, 49)
    assert window is not None
    assert offsets([unpack(p) for p in window]) == [45, 46, 47, 48, 49]


def test_the_window_budget_sheds_an_idle_conversations_window_and_keeps_its_index() -> None:
    hub = Hub(HubLimits(window_events=10, window_total_events=4))
    hub.start(0, 0)
    hub.publish(0, "idle", delta(0, 0, rid="r-idle"))
    hub.publish(0, "idle", delta(1, 1, rid="r-idle"))
    for i, offset in enumerate((2, 3, 4)):
        hub.publish(0, CID, delta(offset, i))
    assert hub.window_total <= 4
    assert hub.from_memory("idle", 0, 0, 4) is None, "its window is gone"
    assert hub.from_memory("idle", 0, 1, 4) == [], "nothing of it after its last event"
    assert hub.offsets("idle", 0, -1, 4) == [0, 1], "a resume from the start reads its two offsets"
    assert hub.base(0) == 0, "nothing forgotten: the partition's horizon has not moved"
    new = "new"
    hub.publish(0, new, delta(5, 0, rid="r-new"))
    assert hub.offsets(new, 0, -1, 5) == [5], "a conversation first seen now is known from the start"
    hub.publish(0, "idle", delta(6, 2, rid="r-idle"))
    window = hub.from_memory("idle", 0, 1, 6)
    assert window is not None
    assert offsets([unpack(p) for p in window]) == [6]


@pytest.mark.parametrize("limits", [HubLimits(index_total_offsets=4), HubLimits(conversations=2)])
def test_the_index_budget_forgets_a_conversation_whole_and_moves_the_partitions_horizon(
    limits: HubLimits,
) -> None:
    hub = Hub(limits)
    hub.start(0, 0)
    hub.publish(0, "idle", delta(0, 0, rid="r-idle"))
    hub.publish(0, "idle", delta(1, 1, rid="r-idle"))
    hub.publish(0, "other", delta(2, 0, rid="r-other"))
    for i, offset in enumerate((3, 4)):
        hub.publish(0, CID, delta(offset, i))
    assert "idle" not in hub.conversations
    assert hub.index_total <= 4
    assert len(hub.conversations) <= 2
    assert hub.base(0) == 2
    assert hub.from_memory("idle", 0, 0, 4) is None, "its events before the horizon are gone"
    assert hub.offsets("idle", 0, -1, 4) is None
    assert hub.from_memory("idle", 0, 1, 4) == []


def test_a_backfill_extends_coverage_to_before_the_readers_start() -> None:
    hub = Hub(HubLimits(index_offsets=2))
    hub.start(0, 100)  # the reader started at offset 100
    hub.publish(0, CID, delta(100, 3))
    hub.subscribe("quiet", 0, Sink())
    assert hub.offsets(CID, 0, -1, 100) is None, "before the backfill: not known before 100"
    assert hub.from_memory("unseen", 0, 49, 100) is None
    # Records 50..99: CID at 60, 70, 80; "older" at 55; nothing of "quiet" or "unseen".
    assert hub.backfill(0, 50, {CID: [60, 70, 80], "older": [55]})
    assert hub.offsets(CID, 0, 49, 100) is None, "only its last 2 offsets are kept (index_offsets)"
    assert hub.offsets(CID, 0, 60, 100) == [70, 80, 100]
    assert hub.offsets("older", 0, 49, 100) == [55]
    assert hub.from_memory("older", 0, 54, 100) is None, "its events are indexed, not in memory"
    assert hub.from_memory("quiet", 0, 49, 100) == [], "followed, nothing written since 50"
    assert hub.from_memory("unseen", 0, 49, 100) == [], "no event at or after 50"
    assert hub.from_memory("unseen", 0, 48, 100) is None, "49 was not read"
    assert hub.index_total == 2 + 1 + 1
    assert not hub.backfill(0, 50, {}), "nothing new to cover"
    assert hub.backfill(0, 40, {"oldest": [45]}), "further back: records 40..49"
    assert hub.offsets("oldest", 0, 39, 100) == [45]
    assert hub.from_memory("unseen", 0, 39, 100) == []


def test_a_backfill_does_not_give_back_a_trimmed_window_what_it_dropped() -> None:
    """A conversation with nothing before the reader's start whose window has since dropped its
    oldest events: the backfill extends its index, never its window (the window cannot serve a
    resume from before what it dropped: that resume must seek). Found by the seek-path test,
    which then received only the window's last events of a 122-event answer."""
    hub = Hub(HubLimits(window_events=2))
    hub.start(0, 100)
    for i, offset in enumerate((100, 101, 102, 103)):
        hub.publish(0, CID, delta(offset, i))
    assert hub.from_memory(CID, 0, 100, 103) is None, "100 and 101 left the window"
    assert hub.backfill(0, 50, {})
    assert hub.from_memory(CID, 0, 60, 103) is None, "the window still does not hold 100 and 101"
    assert hub.offsets(CID, 0, 60, 103) == [100, 101, 102, 103], "the index is complete from 50"
    window = hub.from_memory(CID, 0, 101, 103)
    assert window is not None
    assert offsets([unpack(p) for p in window]) == [102, 103]


def test_a_backfill_is_refused_once_the_partition_has_forgotten_a_conversation() -> None:
    hub = Hub(HubLimits(conversations=1))
    hub.start(0, 10)
    hub.publish(0, "a", delta(10, 0, rid="r-a"))
    hub.publish(0, "b", delta(11, 0, rid="r-b"))  # "a" forgotten: the horizon moved
    assert not hub.backfill(0, 0, {"a": [5]})
    assert hub.offsets("a", 0, 4, 11) is None


def test_subscribers_get_events_after_the_splice_and_conversations_they_follow_are_kept() -> None:
    hub = Hub(HubLimits(window_events=10, window_total_events=2))
    hub.start(0, 0)
    sink = Sink()
    assert hub.subscribe(CID, 0, sink) == -1
    hub.publish(0, CID, started(0))
    for i in range(5):
        hub.publish(0, "noise", delta(1 + i, i, rid="r-n"))
    hub.publish(0, CID, delta(6, 0))
    assert offsets(sink.got) == [0, 6]
    assert CID in hub.conversations
    assert hub.owners.get(CID) == "alice"
    hub.unsubscribe(CID, sink)
    hub.publish(0, CID, delta(7, 1))
    assert offsets(sink.got) == [0, 6]


def test_a_conversation_followed_but_never_written_is_forgotten_when_its_last_follower_leaves() -> None:
    hub = Hub()
    hub.start(0, 0)
    sink = Sink()
    hub.subscribe("quiet", 0, sink)
    assert "quiet" in hub.conversations
    hub.unsubscribe("quiet", sink)
    assert "quiet" not in hub.conversations
    assert hub.from_memory("quiet", 0, -1, 0) == [], "still covered: nothing was written to it"


# ------------------------------------------------------------------ connection


def test_a_connection_buffers_while_catching_up_and_refuses_illegal_transitions() -> None:
    conn = Connection(CID, 0, "alice", "ws", cap=4)
    with pytest.raises(RuntimeError):
        conn.go_live([])
    conn.catching_up()
    conn.deliver(delta(5, 0))
    assert [e.offset for e in conn.take_pending()] == [5]
    conn.push(Control("snapshot", b"{}", "c"))
    conn.go_live([delta(5, 0)], Control("subscribed", b"{}"))
    assert conn.state is State.LIVE
    items = asyncio.run(conn.take(0.01))
    assert items is not None
    assert [getattr(i, "kind", None) for i in items] == ["subscribed", "snapshot", None]
    with pytest.raises(RuntimeError):
        conn.catching_up()


def test_a_client_that_falls_behind_is_closed_with_the_resume_code_and_its_queue_freed() -> None:
    closed: list[Connection] = []
    conn = Connection(CID, 0, "alice", "sse", cap=3)
    conn.on_close = closed.append
    conn.catching_up()
    conn.go_live([])
    for i in range(4):
        conn.deliver(delta(i, i))
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, SlowClient)
    assert conn.error.close_code == 4000
    assert conn.queued == 0
    assert closed == [conn]
    assert asyncio.run(conn.take(0.01)) is None


def test_a_writer_takes_bounded_batches() -> None:
    conn = Connection(CID, 0, "alice", "ws", cap=500)
    conn.catching_up()
    conn.go_live([delta(i, i) for i in range(200)])
    batch = asyncio.run(conn.take(0.01, batch=64))
    assert batch is not None
    assert len(batch) == 64
    assert conn.queued == 136


def test_one_live_frame_in_eight_is_timed_from_its_read_to_its_write() -> None:
    from gateway.metrics import DELIVERY_SAMPLE, GatewayMetrics

    metrics = GatewayMetrics()
    read = time.monotonic_ns() - 3_000_000  # read 3 ms ago
    live = [
        entry_of(TokenDelta(CID, "r-1", i, "t", 0), epoch="e", partition=0, offset=i, read_ns=read)
        for i in range(16)
    ]
    resumed = delta(24, 16)  # read for a resume: no read time, timed as the resume
    metrics.written([*live, resumed, Control("subscribed", b"{}")])

    count = metrics.registry.get_sample_value("tokenlog_gateway_delivery_seconds_count")
    assert count == 16 / DELIVERY_SAMPLE
    total = metrics.registry.get_sample_value("tokenlog_gateway_delivery_seconds_sum")
    assert total is not None
    assert 0.003 <= total / 2 < 1.0


def _stretches(packed: list[Packed], splice: int) -> list[Stretch]:
    async def collect() -> list[Stretch]:
        return [stretch async for stretch in from_window(packed, splice)]

    return asyncio.run(collect())


def test_a_long_catch_up_from_memory_opens_with_its_first_events_alone() -> None:
    log = [started(10), *(delta(11 + seq, seq) for seq in range(FIRST_STRETCH + STRETCH + 4))]
    stretches = _stretches([pack(e) for e in log], splice=5000)
    assert [len(s.entries) for s in stretches] == [FIRST_STRETCH, STRETCH, 5]
    assert [(s.through, s.last) for s in stretches] == [
        (10 + FIRST_STRETCH - 1, False),
        (10 + FIRST_STRETCH + STRETCH - 1, False),
        (5000, True),
    ]
    assert [e for s in stretches for e in s.entries] == log
    # Fed to a merger one by one, the stretches give the log, checked as it goes.
    merger = Merger(9, 5000, None)
    assert [e for s in stretches for e in merger.feed(s.entries, s.through)] == log


def test_a_short_catch_up_from_memory_is_one_stretch() -> None:
    log = [started(10), *(delta(11 + seq, seq) for seq in range(FIRST_STRETCH - 1))]
    [stretch] = _stretches([pack(e) for e in log], splice=80)
    assert (stretch.entries, stretch.through, stretch.last) == (log, 80, True)
    [empty] = _stretches([], splice=80)
    assert (empty.entries, empty.through, empty.last) == ([], 80, True)
