from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.offsets import OffsetTracker


def test_commit_waits_for_the_lowest_unfinished_prompt() -> None:
    tracker = OffsetTracker(10)
    for offset in (10, 11, 12):
        tracker.received(offset)
    tracker.done(12)
    tracker.done(11)
    assert tracker.committable() == 10
    tracker.done(10)
    assert tracker.committable() == 13


def test_nothing_received_commits_the_assigned_position() -> None:
    assert OffsetTracker(5).committable() == 5


def test_an_offset_before_the_assigned_position_is_a_bug() -> None:
    with pytest.raises(ValueError, match="before the assigned position"):
        OffsetTracker(5).received(4)


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_the_committable_offset_never_passes_an_unfinished_one(order: list[int], finished: int) -> None:
    tracker = OffsetTracker(0)
    for offset in range(30):
        tracker.received(offset)
    done = set(order[:finished])
    for offset in order[:finished]:
        tracker.done(offset)
    position = tracker.committable()
    assert all(o in done for o in range(position))
    assert position == 30 or position not in done
