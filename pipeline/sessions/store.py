"""Loading and saving a conversation's state in the three session tables (``texts`` has the form).

The agents work on whole state (``state.Session`` and ``state.LiveAnswer`` with their texts);
this module reads it from, and writes it back to, ``sessions`` and ``live`` (small heads) and
``texts`` (pieces). The order of a save matters for a crash between its writes: pieces first,
heads last, so a head never names text that was not stored (an event re-applied after a crash
writes the same pieces again).

Every write goes through ``put``: a value that would still be too large for the changelog
(``max_value_bytes``; none is, by construction, unless a foreign producer wrote fields of
unbounded size) is refused, logged with its key and counted, and the app carries on, instead of
the changelog producer's error crashing every agent.

Reads outside an agent (the snapshot view) have no current event: the tables then look a key up
in every partition this worker holds, which is where the agents wrote it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pipeline.sessions.state import LiveAnswer, Session, Turn
from pipeline.sessions.texts import (
    ANSWER,
    PROMPT,
    Piece,
    join,
    live_head,
    piece_key,
    session_head,
    split,
    texts_of,
    whole_live,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Loaded:
    """A conversation's state as a batch found it."""

    conversation_id: str
    session: Session
    """The head: turns and pending prompts without texts."""
    live: LiveAnswer
    """The whole live answer (its text from every piece), without its prompt text."""
    rest: list[Piece] = field(default_factory=list)
    """The live answer's stored pieces after the first."""


class Tables:
    def __init__(
        self,
        sessions: Any,
        live: Any,
        texts: Any,
        *,
        max_value_bytes: int,
        refused: Callable[[str], None],
    ) -> None:
        self.sessions, self.live, self.texts = sessions, live, texts
        self._max = max_value_bytes
        self._refused = refused

    # -- reads -------------------------------------------------------------------------------

    def _pieces(self, conversation_id: str, kind: str, item_id: str, start: int = 0) -> Iterator[Piece]:
        n = start
        while (piece := self.texts.get(piece_key(conversation_id, kind, item_id, n))) is not None:
            yield piece
            n += 1

    def text(self, conversation_id: str, kind: str, item_id: str) -> str:
        return join(self._pieces(conversation_id, kind, item_id))[0]

    def load(self, key: bytes) -> Loaded:
        conversation_id = key.decode()
        session = self.sessions.get(key) or Session(conversation_id)
        head: LiveAnswer = self.live.get(key) or LiveAnswer()
        if head.turn is None:
            return Loaded(conversation_id, session, head)
        rest = list(self._pieces(conversation_id, ANSWER, head.turn.response_id, 1))
        return Loaded(conversation_id, session, whole_live(head, rest), rest)

    def whole(self, key: bytes, *, max_chars: int) -> tuple[Session | None, LiveAnswer | None]:
        """The conversation with its texts (for its snapshot); None for a part never written. The
        finished turns are the newest whose texts fit in ``max_chars`` together; older ones are
        counted in ``dropped_turns`` (the log has them). A head written before texts were kept in
        pieces still carries them inline."""
        session, head = self.sessions.get(key), self.live.get(key)
        conversation_id = key.decode()
        if head is not None and head.turn is not None:
            turn = head.turn
            head = whole_live(head, list(self._pieces(conversation_id, ANSWER, turn.response_id, 1)))
            if not turn.prompt_text:
                prompt = self.text(conversation_id, PROMPT, turn.prompt_id)
                head = replace(head, turn=replace(head.turn or turn, prompt_text=prompt))
        if session is not None:
            turns: list[Turn] = []
            budget = max_chars
            for bare_turn in reversed(session.turns):
                turn = self._whole_turn(conversation_id, bare_turn)
                budget -= len(turn.prompt_text) + len(turn.answer)
                if budget < 0:
                    break
                turns.append(turn)
            session = replace(
                session,
                turns=tuple(reversed(turns)),
                dropped_turns=session.dropped_turns + len(session.turns) - len(turns),
                pending=tuple(
                    p if p.text else replace(p, text=self.text(conversation_id, PROMPT, p.prompt_id))
                    for p in session.pending
                ),
            )
        return session, head

    def _whole_turn(self, conversation_id: str, turn: Turn) -> Turn:
        prompt = turn.prompt_text or self.text(conversation_id, PROMPT, turn.prompt_id)
        answer = turn.answer or self.text(conversation_id, ANSWER, turn.response_id)
        return replace(turn, prompt_text=prompt, answer=answer)

    # -- writes ------------------------------------------------------------------------------

    def put(self, table: Any, key: bytes, value: Any) -> bool:
        """``table[key] = value`` unless it is too large for the changelog (then logged, counted)."""
        size = len(orjson.dumps(value))
        if size > self._max:
            log.error(
                "not storing %s[%r]: %d bytes is over the %d a session-table value may take",
                table.name,
                key[:200],
                size,
                self._max,
            )
            self._refused(table.name)
            return False
        table[key] = value
        return True

    def _write(
        self,
        cid: str,
        kind: str,
        item_id: str,
        pieces: list[Piece],
        *,
        known: dict[int, Piece],
        first: int = 0,
    ) -> None:
        """Store ``pieces`` of a text, numbered from ``first``, but for those ``known`` to be
        stored as they are."""
        for n, piece in enumerate(pieces, first):
            if known.get(n) != piece:
                self.put(self.texts, piece_key(cid, kind, item_id, n), piece)

    def _drop(self, cid: str, kind: str, item_id: str, numbers: range | None = None) -> None:
        """Delete pieces ``numbers`` of a text (``None``: every piece, up to the first missing)."""
        for n in numbers if numbers is not None else itertools.count():
            key = piece_key(cid, kind, item_id, n)
            if self.texts.get(key) is not None:
                del self.texts[key]
            elif numbers is None:
                return

    def save(self, key: bytes, loaded: Loaded, session: Session, answer: LiveAnswer) -> None:
        """Store ``session`` and ``answer``, the state ``loaded`` became (the caller has set the
        current event to one of the conversation's, so every write lands in its partition)."""
        cid = loaded.conversation_id
        before = loaded.live.turn
        stored = dict(enumerate(loaded.rest, 1))  # the pieces of before's answer in the table
        # 1. Texts the batch added: new pending prompts, finished turns, the live answer's prompt.
        added = texts_of(session.turns, session.pending)
        if answer.turn is not None and answer.turn.prompt_text:
            added[PROMPT, answer.turn.prompt_id] = answer.turn.prompt_text
        for (kind, item_id), text in added.items():
            same = kind == ANSWER and before is not None and before.response_id == item_id
            self._write(cid, kind, item_id, split(text), known=stored if same else {})
        # 2. The live answer's pieces after its first (the first is in its head); what is left of
        #    the loaded answer's when it was cut back, or replaced without becoming a turn.
        head, rest = live_head(answer)
        if answer is not loaded.live:
            now = answer.turn
            if now is not None:
                same = before is not None and before.response_id == now.response_id
                self._write(cid, ANSWER, now.response_id, rest, known=stored if same else {}, first=1)
                if same:
                    self._drop(cid, ANSWER, now.response_id, range(len(rest) + 1, len(loaded.rest) + 1))
            replaced = before is not None and (now is None or now.response_id != before.response_id)
            if before is not None and replaced and (ANSWER, before.response_id) not in added:
                self._drop(cid, ANSWER, before.response_id, range(1, len(loaded.rest) + 1))
        # 3. Turns dropped from the session (beyond max_turns): their texts go too.
        if session is not loaded.session:
            kept = {t.response_id for t in session.turns}
            for turn in loaded.session.turns:
                if turn.response_id not in kept:
                    self._drop(cid, PROMPT, turn.prompt_id)
                    self._drop(cid, ANSWER, turn.response_id)
        # 4. The heads.
        if session is not loaded.session:
            self.put(self.sessions, key, session_head(session))
        if answer is not loaded.live:
            self.put(self.live, key, head)


__all__ = ["Loaded", "Tables"]
