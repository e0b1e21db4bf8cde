"""The cursor: opaque on the wire, (epoch, partition, last_offset) inside."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.cursor import Cursor, Sentinel, check, parse
from schemas.errors import CursorError

epochs = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
cursors = st.builds(
    Cursor,
    epoch=epochs,
    partition=st.integers(min_value=0, max_value=999_999_999),
    last_offset=st.integers(min_value=-1, max_value=2**63 - 2),
)


@given(cursors)
def test_format_then_parse_is_identity(cursor: Cursor) -> None:
    assert parse(cursor.format()) == cursor
    assert parse(str(cursor)) == cursor


@given(st.text(max_size=200))
def test_parse_of_any_text_is_a_position_or_a_cursor_error(text: str) -> None:
    reason = None
    try:
        position = parse(text)
    except CursorError as exc:
        reason = exc.reason
    else:
        assert isinstance(position, Cursor | Sentinel)
    assert reason in (None, "malformed")


def test_the_off_by_one_rule_resume_starts_after_the_last_event_seen() -> None:
    cursor = Cursor("e1", 3, 41)
    assert cursor.next_offset == 42
    assert Cursor("e1", 3, -1).next_offset == 0
    assert cursor.after(57) == Cursor("e1", 3, 57)


def test_sentinels_parse_to_themselves() -> None:
    assert parse("beginning") is Sentinel.BEGINNING
    assert parse("now") is Sentinel.NOW


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.e.3",
        "1.e.3.x",
        "2.e.3.4",
        "1.e.-3.4",
        "1.e.3.-2",
        "1.e.03.4",
        "1.e!.3.4",
        "1..3.4",
        " 1.e.3.4",
        "1.e.3.4\n",
        "1.e.3.99999999999999999999",
        "1." + "e" * 65 + ".3.4",
        "x" * 500,
    ],
)
def test_malformed_cursors_are_refused(text: str) -> None:
    with pytest.raises(CursorError) as failure:
        parse(text)
    assert failure.value.reason == "malformed"


def test_a_cursor_from_another_log_epoch_is_refused() -> None:
    with pytest.raises(CursorError) as failure:
        check(Cursor("old", 3, 10), epoch="new", partition=3)
    assert failure.value.reason == "epoch_changed"


def test_a_cursor_into_another_conversations_partition_is_refused() -> None:
    with pytest.raises(CursorError) as failure:
        check(Cursor("e1", 4, 10), epoch="e1", partition=3)
    assert failure.value.reason == "wrong_partition"


def test_a_matching_cursor_passes_the_check() -> None:
    assert check(Cursor("e1", 3, 10), epoch="e1", partition=3) == Cursor("e1", 3, 10)


def test_cursors_order_by_offset_within_a_partition() -> None:
    assert Cursor("e1", 3, 10) < Cursor("e1", 3, 11)


def test_constructing_an_invalid_cursor_is_refused() -> None:
    with pytest.raises(CursorError):
        Cursor("has.dot", 0, 0)
    with pytest.raises(CursorError):
        Cursor("e", -1, 0)
    with pytest.raises(CursorError):
        Cursor("e", 0, -2)
