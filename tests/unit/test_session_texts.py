"""The session tables keep texts in pieces: what is stored, however large, rebuilds the state the
reducers computed, and no stored value comes near the broker's message limit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sessions.codec import StateCodec
from pipeline.sessions.state import LiveAnswer, Session, evolve_live, evolve_live_deltas, evolve_session
from pipeline.sessions.store import Tables
from pipeline.sessions.texts import PIECE_CHARS, Piece, bare, join, split
from schemas.records import (
    PromptSubmitted,
    ResponseCompleted,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
)

C = "c-1"
KEY = C.encode()
Log = list[tuple[int, PromptSubmitted | TokenEvent]]


class Table(dict[bytes, Any]):
    """A table's in-memory twin: what the app's tables do for ``Tables`` (get, set, delete), with
    every value written through the changelog codec, as Faust does."""

    codec = StateCodec()

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.largest = 0

    def __setitem__(self, key: bytes, value: Any) -> None:
        encoded = self.codec.dumps(value)
        self.largest = max(self.largest, len(encoded))
        super().__setitem__(key, self.codec.loads(encoded))


def tables(max_value_bytes: int = 512 * 1024) -> tuple[Tables, list[str]]:
    refused: list[str] = []
    store = Tables(
        Table("sessions"),
        Table("live"),
        Table("texts"),
        max_value_bytes=max_value_bytes,
        refused=refused.append,
    )
    return store, refused


def apply(
    store: Tables,
    batches: list[list[tuple[int, PromptSubmitted | TokenEvent]]],
    max_turns: int = 50,
    start: tuple[Session, LiveAnswer] | None = None,
) -> tuple[Session, LiveAnswer]:
    """What the tokens agent does a batch at a time (load, apply, save); the state the reducers
    reach over the whole log on texts in memory (from ``start``), for comparison."""
    reference, ref_live = start or (Session(C), LiveAnswer())
    for batch in batches:
        found = store.load(KEY)
        session, live = found.session, found.live
        run: list[tuple[TokenDelta, int]] = []
        for offset, event in batch:
            if isinstance(event, TokenDelta):  # as the agent does: a run of deltas at once
                run.append((event, offset))
                continue
            if run:
                live, ref_live, run = evolve_live_deltas(live, run), evolve_live_deltas(ref_live, run), []
            session = evolve_session(session, event, offset, live_before=live, max_turns=max_turns)
            reference = evolve_session(reference, event, offset, live_before=ref_live, max_turns=max_turns)
            if not isinstance(event, PromptSubmitted):
                live = evolve_live(live, event, offset)
                ref_live = evolve_live(ref_live, event, offset)
        if run:
            live, ref_live = evolve_live_deltas(live, run), evolve_live_deltas(ref_live, run)
        store.save(KEY, found, session, live)
    return reference, ref_live


def answer(
    rid: str, prompt_id: str, prompt: str, pieces: list[str], offset: int
) -> list[tuple[int, PromptSubmitted | TokenEvent]]:
    events: list[PromptSubmitted | TokenEvent] = [
        ResponseStarted(C, rid, prompt_id, "u-1", prompt, "demo", 1)
    ]
    events += [TokenDelta(C, rid, i, text, 2) for i, text in enumerate(pieces)]
    events.append(ResponseCompleted(C, rid, len(pieces) - 1, 3))
    return [(offset + i, e) for i, e in enumerate(events)]


def assert_rebuilds(store: Tables, reference: Session, live: LiveAnswer) -> None:
    session, whole = store.whole(KEY, max_chars=10**9)
    assert session is not None
    assert session.turns == reference.turns
    assert session.pending == reference.pending
    assert (session.owner, session.dropped_turns) == (reference.owner, reference.dropped_turns)
    assert whole is not None
    # The last ended answer is kept without its texts (it only stands in for a lost session write).
    assert whole == replace(live, ended=bare(live.ended) if live.ended else None)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3 * PIECE_CHARS + 5).flatmap(lambda t: st.tuples(st.just(t), st.data())))
def test_a_text_and_its_chunk_ends_survive_splitting(case: tuple[str, st.DataObject]) -> None:
    text, data = case
    ends = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=50)))
    pieces = split(text, ends)
    assert all(len(p.text) <= PIECE_CHARS for p in pieces)
    assert join(pieces) == (text, tuple(ends))
    assert len(pieces) == max(1, -(-len(text) // PIECE_CHARS))


def test_an_end_at_a_piece_boundary_belongs_to_the_piece_it_closes() -> None:
    text = "x" * (2 * PIECE_CHARS)
    pieces = split(text, [PIECE_CHARS, PIECE_CHARS, 2 * PIECE_CHARS])
    assert [p.ends for p in pieces] == [(PIECE_CHARS, PIECE_CHARS), (PIECE_CHARS,)]


def test_a_conversation_of_5_mb_with_an_answer_of_2_mb_is_stored_in_small_values() -> None:
    """The probe's crash, as data: 45 prompts of 32,000 characters (64 KB of UTF-8 each) and their
    answers, then one answer of 2 MB written a token at a time, in batches as the agent applies
    them."""
    store, refused = tables()
    batches: list[list[tuple[int, PromptSubmitted | TokenEvent]]] = []
    offset = 0
    for turn in range(45):
        prompt = ("é" * 31_990) + f" {turn}"
        log = answer(f"r-{turn}", f"p-{turn}", prompt, [f"w{turn} " * 8] * 3, offset)
        batches.append(log)
        offset += len(log)
    words = [f"token{i} " for i in range(220_000)]  # about 2.2 MB
    assert sum(map(len, words)) > 2_000_000
    log = answer("r-long", "p-long", "write a lot", words, offset)
    batches += [log[i : i + 5000] for i in range(0, len(log) - 1, 5000)]
    reference, live = apply(store, batches[:-1])
    assert live.turn is not None
    assert_rebuilds(store, reference, live)  # mid-answer: the live answer from its pieces
    reference, live = apply(store, batches[-1:])
    assert live.turn is None
    session, _ = store.whole(KEY, max_chars=10**9)
    assert session is not None
    assert session.turns[-1].answer == "".join(words)
    assert len(session.turns) == 46
    stored = sum(len(t.prompt_text.encode()) + len(t.answer.encode()) for t in session.turns)
    assert stored > 5_000_000
    for table in (store.sessions, store.live, store.texts):
        assert table.largest < 200_000, table.name
    assert refused == []


def test_a_continue_takeover_cuts_back_into_an_earlier_piece_and_drops_the_pieces_after_it() -> None:
    store, _ = tables()
    words = ["x" * 1000] * 40  # 40,000 characters: three pieces
    log = answer("r-1", "p-1", "q", words, 0)[:-1]
    reference, live = apply(store, [log])
    cut: Log = [(len(log), ResponseResumed(C, "r-1", 1, 5, ResumeMode.CONTINUE, 4))]
    more: Log = [(len(log) + 1 + i, TokenDelta(C, "r-1", 6 + i, "y", 5, attempt=1)) for i in range(3)]
    reference, live = apply(store, [cut, more], start=(reference, live))
    assert live.turn is not None
    assert live.turn.answer == "x" * 6000 + "yyy"
    assert_rebuilds(store, reference, live)
    assert not [k for k in store.texts if orjson.loads(k)[1] == "a"]  # one piece: in the head


def test_finished_turns_beyond_max_turns_take_their_texts_with_them() -> None:
    store, _ = tables()
    batches = []
    for turn in range(5):
        prompt = f"q{turn}" * 9000
        submitted = (100 + turn, PromptSubmitted(C, f"p-{turn}", "u-1", prompt, 1))
        batches.append([submitted, *answer(f"r-{turn}", f"p-{turn}", prompt, ["a" * 20_000], 10 * turn)])
    reference, live = apply(store, batches, max_turns=2)
    assert_rebuilds(store, reference, live)
    assert {tuple(orjson.loads(k)[1:3]) for k in store.texts} == {
        ("p", "p-3"),
        ("a", "r-3"),
        ("p", "p-4"),
        ("a", "r-4"),
    }


def test_a_snapshot_keeps_the_newest_turns_that_fit_its_budget() -> None:
    store, _ = tables()
    batches = [answer(f"r-{t}", f"p-{t}", "q" * 10, ["a" * 90], 10 * t) for t in range(5)]
    apply(store, batches)
    session, _ = store.whole(KEY, max_chars=250)
    assert session is not None
    assert [t.prompt_id for t in session.turns] == ["p-3", "p-4"]
    assert session.dropped_turns == 3


def test_a_value_too_large_for_the_changelog_is_refused_counted_and_not_stored() -> None:
    store, refused = tables(max_value_bytes=1000)
    # A foreign producer's field of unbounded size (a model name of 2,000 characters).
    events: list[tuple[int, PromptSubmitted | TokenEvent]] = [
        (0, ResponseStarted(C, "r-1", "p-1", "u-1", "q", "demo" * 500, 1))
    ]
    events.append((1, ResponseCompleted(C, "r-1", -1, 3)))
    events.append((2, PromptSubmitted(C, "p-2", "u-1", "q", 4)))
    apply(store, [events[:1]])
    assert refused == ["live"]
    assert KEY not in store.live
    assert KEY in store.sessions  # the rest of the state is stored
    apply(store, [events[1:]])  # the app carries on
    assert [p.prompt_id for p in store.sessions[KEY].pending] == ["p-2"]


def test_heads_written_before_texts_were_pieces_still_load_and_move_their_texts_out() -> None:
    """A changelog from before this change holds whole texts in the heads."""
    store, _ = tables()
    reference, _ = apply(store, [answer("r-1", "p-1", "question", ["an", "swer"], 0)])
    old = store.sessions[KEY]
    whole, _ = store.whole(KEY, max_chars=10**9)
    assert whole is not None
    dict.__setitem__(store.sessions, KEY, whole)  # as an old changelog would hold it
    store.texts.clear()
    session, _ = store.whole(KEY, max_chars=10**9)
    assert session is not None
    assert session.turns == reference.turns  # read from the head itself
    more: Log = [(10, PromptSubmitted(C, "p-2", "u-1", "next", 2))]
    apply(store, [more])
    assert store.sessions[KEY].turns[0].answer == ""  # the head is small again
    assert store.text(C, "a", "r-1") == "answer"
    assert old.turns[0].answer == ""
    assert all(isinstance(piece, Piece) for piece in store.texts.values())
