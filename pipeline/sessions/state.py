"""The session of one conversation and the pure reducer that builds it from the log.

A session is kept in two parts so a token costs a small write, not a rewrite of the whole
conversation:

- ``Session``: owner, finished turns (the last ``max_turns`` inline), pending prompts, and the
  offsets of the last events applied to it (start, end, prompt and cancel events);
- ``LiveAnswer``: the answer being written now (text so far, last seq, attempt), updated by every
  ``TokenDelta``.

``evolve_session`` and ``evolve_live`` apply one event each, at its offset, **exactly once**: an
event at or below the part's last applied offset of that topic is ignored (re-delivery after a
crash never doubles text). The reader rule of ``schemas.answers`` decides what a takeover or a
stale writer means for the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from schemas.ownership import Claim, decide
from schemas.records import (
    CancelRequested,
    PromptRecord,
    PromptSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenDelta,
    TokenEvent,
)

MAX_TURNS = 50
"""Finished turns kept inline; older ones are counted in ``dropped_turns`` (replay has them)."""
MAX_PENDING = 100


@dataclass(frozen=True, slots=True)
class Turn:
    """One prompt and its answer."""

    prompt_id: str
    prompt_text: str
    response_id: str
    status: str
    """``streaming``, ``completed``, ``failed`` or ``cancelled``."""
    answer: str = ""
    last_seq: int = -1
    model: str = ""
    device_id: str = ""
    attempt: int = 0
    finish_reason: str = ""
    error_class: str = ""
    error_message: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started_at: int = 0
    first_token_at: int = 0
    ended_at: int = 0


@dataclass(frozen=True, slots=True)
class PendingPrompt:
    prompt_id: str
    text: str
    submitted_at: int
    device_id: str = ""


@dataclass(frozen=True, slots=True)
class Session:
    conversation_id: str
    owner: str = ""
    """The user of the conversation's first ``PromptSubmitted`` (``schemas.ownership``); set
    only by it (or by a ``ResponseStarted``, which the worker writes for the owner alone, when
    the answer's event is applied before its prompt's)."""
    turns: tuple[Turn, ...] = ()
    dropped_turns: int = 0
    pending: tuple[PendingPrompt, ...] = ()
    tokens_offset: int = -1
    """Offset in ``conversation.tokens`` of the last event applied to this part."""
    prompts_offset: int = -1
    """Offset in ``conversation.prompts`` of the last command applied."""
    active_window: int = -1
    """The usage analytics' window (``time // window_s``) this conversation was last counted
    active in (``analytics``)."""


@dataclass(frozen=True, slots=True)
class LiveAnswer:
    """The answer being written: a turn plus what the reader rule needs to continue it."""

    turn: Turn | None = None
    chunk_ends: tuple[int, ...] = ()
    """End position in ``turn.answer`` of each accepted seq (to cut back on a CONTINUE takeover)."""
    tokens_offset: int = -1
    ended: Turn | None = None
    """The last answer that ended, as it ended: kept so a session that missed the terminal event
    (a changelog write lost in a crash) can still take the finished turn from here."""


def _answer_ended(turn: Turn, event: TokenEvent) -> Turn:
    if isinstance(event, ResponseCompleted):
        return replace(
            turn,
            status="completed",
            finish_reason=event.finish_reason,
            ended_at=event.completed_at,
            prompt_tokens=event.usage.prompt_tokens,
            completion_tokens=event.usage.completion_tokens,
        )
    if isinstance(event, ResponseFailed):
        return replace(
            turn,
            status="failed",
            error_class=event.error_class,
            error_message=event.error_message,
            ended_at=event.failed_at,
        )
    assert isinstance(event, ResponseCancelled)
    return replace(turn, status="cancelled", finish_reason="cancelled", ended_at=event.cancelled_at)


def evolve_live(live: LiveAnswer, event: TokenEvent, offset: int) -> LiveAnswer:
    """The live answer after ``event`` (at ``offset`` of the tokens topic)."""
    if offset <= live.tokens_offset:
        return live
    turn = live.turn
    if isinstance(event, ResponseStarted):
        if turn is not None and turn.response_id == event.response_id and event.attempt <= turn.attempt:
            return replace(live, tokens_offset=offset)
        started = Turn(
            event.prompt_id,
            event.prompt_text,
            event.response_id,
            "streaming",
            model=event.model,
            device_id=event.device_id,
            attempt=event.attempt,
            started_at=event.started_at,
        )
        return LiveAnswer(started, (), offset, live.ended)
    if turn is None or event.response_id != turn.response_id or event.attempt < turn.attempt:
        return replace(live, tokens_offset=offset)  # not the live answer, or a fenced writer
    if isinstance(event, TokenDelta):
        if event.attempt != turn.attempt or event.seq != turn.last_seq + 1:
            return replace(live, tokens_offset=offset)  # duplicate, gap or unannounced attempt
        text = turn.answer + event.text
        first = turn.first_token_at or event.produced_at
        return LiveAnswer(
            replace(turn, answer=text, last_seq=event.seq, first_token_at=first),
            (*live.chunk_ends, len(text)),
            offset,
            live.ended,
        )
    if isinstance(event, ResponseResumed):
        if event.attempt <= turn.attempt:
            return replace(live, tokens_offset=offset)
        if event.mode is ResumeMode.RESTART:
            keep = 0
        else:
            keep = min(event.resumed_after_seq + 1, len(live.chunk_ends))
        cut = live.chunk_ends[keep - 1] if keep else 0
        return LiveAnswer(
            replace(turn, answer=turn.answer[:cut], last_seq=keep - 1, attempt=event.attempt),
            live.chunk_ends[:keep],
            offset,
            live.ended,
        )
    if event.attempt != turn.attempt:
        return replace(live, tokens_offset=offset)
    return LiveAnswer(None, (), offset, _answer_ended(turn, event))  # terminal: the turn moves to the session


def evolve_live_deltas(live: LiveAnswer, deltas: Sequence[tuple[TokenDelta, int]]) -> LiveAnswer:
    """``evolve_live`` over ``deltas`` (each with its offset), with the text and the chunk ends
    copied once instead of once a delta: equal to applying them one by one."""
    turn, offset = live.turn, live.tokens_offset
    pieces: list[str] = []
    ends: list[int] = []
    length = len(turn.answer) if turn is not None else 0
    last_seq = turn.last_seq if turn is not None else -1
    first = turn.first_token_at if turn is not None else 0
    for event, at in deltas:
        if at <= offset:
            continue  # re-delivered
        offset = at
        if (
            turn is None
            or event.response_id != turn.response_id
            or event.attempt != turn.attempt
            or event.seq != last_seq + 1
        ):
            continue  # not the live answer, a fenced or unannounced writer, a duplicate or a gap
        pieces.append(event.text)
        length += len(event.text)
        ends.append(length)
        last_seq = event.seq
        first = first or event.produced_at
    if offset == live.tokens_offset:
        return live
    if turn is None or not pieces:
        return replace(live, tokens_offset=offset)
    grown = replace(turn, answer=turn.answer + "".join(pieces), last_seq=last_seq, first_token_at=first)
    return LiveAnswer(grown, (*live.chunk_ends, *ends), offset, live.ended)


def _finished_turn(event: TokenEvent, live: LiveAnswer | None) -> Turn | None:
    if live is None:
        return None
    if (
        live.turn is not None
        and live.turn.response_id == event.response_id
        and live.turn.attempt == event.attempt
    ):
        return _answer_ended(live.turn, event)
    if (
        live.ended is not None
        and live.ended.response_id == event.response_id
        and live.ended.attempt == event.attempt
    ):
        return live.ended
    return None


def evolve_session(
    session: Session,
    event: PromptRecord | TokenEvent,
    offset: int,
    *,
    live_before: LiveAnswer | None = None,
    max_turns: int = MAX_TURNS,
) -> Session:
    """The session after ``event``. ``live_before`` is the live answer just before a terminal
    event (its text becomes the finished turn's answer). A prompt of a user who is not the
    owner (``schemas.ownership``) only moves ``prompts_offset``: it is neither pending nor a
    turn, and it never changes the owner."""
    if isinstance(event, PromptSubmitted | CancelRequested):
        if offset <= session.prompts_offset:
            return session
        if isinstance(event, CancelRequested) or decide(session.owner, event) is Claim.STRANGER:
            return replace(session, prompts_offset=offset)  # a stranger's prompt: not pending, no turn
        pending = session.pending
        known = {p.prompt_id for p in pending} | {t.prompt_id for t in session.turns}
        if event.prompt_id not in known and len(pending) < MAX_PENDING:
            pending = (
                *pending,
                PendingPrompt(event.prompt_id, event.text, event.submitted_at, event.device_id),
            )
        return replace(session, owner=event.user_id, pending=pending, prompts_offset=offset)

    if offset <= session.tokens_offset:
        return session
    if isinstance(event, ResponseStarted):
        pending = tuple(p for p in session.pending if p.prompt_id != event.prompt_id)
        return replace(session, owner=session.owner or event.user_id, pending=pending, tokens_offset=offset)
    if isinstance(event, ResponseCompleted | ResponseFailed | ResponseCancelled):
        finished = _finished_turn(event, live_before)
        if finished is None or any(t.response_id == finished.response_id for t in session.turns):
            return replace(session, tokens_offset=offset)
        turns = (*session.turns, finished)
        # The prompt's own event may be applied after its answer's (two topics, two agents).
        pending = tuple(p for p in session.pending if p.prompt_id != finished.prompt_id)
        dropped = session.dropped_turns
        if len(turns) > max_turns:
            dropped += len(turns) - max_turns
            turns = turns[-max_turns:]
        return replace(session, turns=turns, dropped_turns=dropped, pending=pending, tokens_offset=offset)
    return session  # deltas and takeovers only touch the live answer


def to_dict(value: Any) -> Any:
    """JSON-ready form of the state types (for the changelog and the snapshot)."""
    if isinstance(value, tuple | list):
        return [to_dict(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: to_dict(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def session_from_dict(data: dict[str, Any]) -> Session:
    return Session(
        conversation_id=data["conversation_id"],
        owner=data["owner"],
        turns=tuple(Turn(**t) for t in data["turns"]),
        dropped_turns=data["dropped_turns"],
        pending=tuple(PendingPrompt(**p) for p in data["pending"]),
        tokens_offset=data["tokens_offset"],
        prompts_offset=data["prompts_offset"],
        active_window=data.get("active_window", -1),
    )


def live_from_dict(data: dict[str, Any]) -> LiveAnswer:
    turn, ended = data.get("turn"), data.get("ended")
    return LiveAnswer(
        Turn(**turn) if turn else None,
        tuple(data["chunk_ends"]),
        data["tokens_offset"],
        Turn(**ended) if ended else None,
    )
