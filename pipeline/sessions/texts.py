"""How the session tables keep texts: in pieces of at most ``PIECE_CHARS`` characters, so that no
stored value comes near the broker's message limit, however long a conversation, a prompt or an
answer grows.

The heads (``Session`` in the ``sessions`` table, ``LiveAnswer`` in ``live``) are kept small:

- a ``Session`` head holds its turns and pending prompts **without** their texts (``prompt_text``,
  ``answer`` and ``text`` are empty);
- a ``LiveAnswer`` head holds the answer being written without its prompt text, and only the
  first piece of its text (with that piece's chunk ends), so a short answer still costs one write;
- every text lives in the ``texts`` table under ``piece_key(conversation, kind, id, n)``: a prompt's
  pieces under ``("p", prompt_id)`` and an answer's under ``("a", response_id)`` — piece 0 of a
  live answer is in its head until the answer ends.

A value is then at most ``PIECE_CHARS`` characters plus one chunk end per character: with
orjson's worst case of 6 bytes a character (``\\u00XX`` escapes) and 6 bytes an end, under
200 KB, against Kafka's default message limit of 1,048,588 bytes. The reducers in ``state`` work
on whole texts; these pure functions translate between the two forms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import orjson

from pipeline.sessions.state import LiveAnswer, PendingPrompt, Session, Turn

PIECE_CHARS = 16_384
PROMPT = "p"
ANSWER = "a"


@dataclass(frozen=True, slots=True)
class Piece:
    """One stored piece of a text."""

    text: str
    ends: tuple[int, ...] = ()
    """Chunk ends (``LiveAnswer.chunk_ends``) that fall in this piece, relative to its start."""


def piece_key(conversation_id: str, kind: str, item_id: str, n: int) -> bytes:
    """The ``texts`` table key of piece ``n`` of a prompt (``PROMPT``, prompt id) or an answer
    (``ANSWER``, response id) of ``conversation_id``."""
    return orjson.dumps([conversation_id, kind, item_id, n])


def split(text: str, ends: Sequence[int] = ()) -> list[Piece]:
    """``text`` (and its chunk ends) in pieces of ``PIECE_CHARS``; at least one, possibly empty.
    An end belongs to the piece it closes: end ``e > 0`` to piece ``(e - 1) // PIECE_CHARS``."""
    count = max(1, -(-len(text) // PIECE_CHARS))
    grouped: list[list[int]] = [[] for _ in range(count)]
    for end in ends:
        index = min(count - 1, (end - 1) // PIECE_CHARS) if end > 0 else 0
        grouped[index].append(end - index * PIECE_CHARS)
    return [Piece(text[i * PIECE_CHARS : (i + 1) * PIECE_CHARS], tuple(grouped[i])) for i in range(count)]


def join(pieces: Iterable[Piece]) -> tuple[str, tuple[int, ...]]:
    """The text and absolute chunk ends of ``pieces`` (the inverse of ``split``)."""
    texts: list[str] = []
    ends: list[int] = []
    for index, piece in enumerate(pieces):
        texts.append(piece.text)
        ends.extend(end + index * PIECE_CHARS for end in piece.ends)
    return "".join(texts), tuple(ends)


def bare(turn: Turn) -> Turn:
    """``turn`` as a head keeps it: without its texts."""
    if not turn.prompt_text and not turn.answer:
        return turn
    return replace(turn, prompt_text="", answer="")


def session_head(session: Session) -> Session:
    """``session`` as the ``sessions`` table keeps it: no turn or pending prompt with its text."""
    turns = tuple(bare(t) for t in session.turns)
    pending = tuple(replace(p, text="") if p.text else p for p in session.pending)
    if all(a is b for a, b in zip(turns, session.turns, strict=True)) and all(
        a is b for a, b in zip(pending, session.pending, strict=True)
    ):
        return session
    return replace(session, turns=turns, pending=pending)


def live_head(live: LiveAnswer) -> tuple[LiveAnswer, list[Piece]]:
    """``live`` as the ``live`` table keeps it (its first piece inline, no prompt text, the ended
    turn bare), and the pieces after the first, stored under its response id."""
    ended = bare(live.ended) if live.ended is not None else None
    if live.turn is None:
        return (live if ended is live.ended else replace(live, ended=ended)), []
    pieces = split(live.turn.answer, live.chunk_ends)
    first = pieces[0]
    turn = replace(live.turn, prompt_text="", answer=first.text)
    return LiveAnswer(turn, first.ends, live.tokens_offset, ended), pieces[1:]


def whole_live(head: LiveAnswer, rest: Sequence[Piece]) -> LiveAnswer:
    """The live answer of ``head`` with the ``rest`` of its pieces (the inverse of ``live_head``,
    but for the prompt text, which the reducers never read back)."""
    if head.turn is None or not rest:
        return head
    text, ends = join([Piece(head.turn.answer, head.chunk_ends), *rest])
    return replace(head, turn=replace(head.turn, answer=text), chunk_ends=ends)


def texts_of(turns: Iterable[Turn], pending: Iterable[PendingPrompt]) -> dict[tuple[str, str], str]:
    """The texts the given turns and pending prompts carry, by (kind, id): what a write must put in
    the ``texts`` table (heads loaded from it carry none, so this is what a batch added)."""
    out: dict[tuple[str, str], str] = {}
    for turn in turns:
        if turn.prompt_text:
            out[PROMPT, turn.prompt_id] = turn.prompt_text
        if turn.answer:
            out[ANSWER, turn.response_id] = turn.answer
    for prompt in pending:
        if prompt.text:
            out[PROMPT, prompt.prompt_id] = prompt.text
    return out


__all__ = [
    "ANSWER",
    "PIECE_CHARS",
    "PROMPT",
    "Piece",
    "bare",
    "join",
    "live_head",
    "piece_key",
    "session_head",
    "split",
    "texts_of",
    "whole_live",
]
