"""A snapshot brought up to the gateway's reader: the conversation's events after the snapshot's
cursor folded into it, so what a client hydrates from never trails what it streams.

The session app applies ``conversation.tokens`` in batches and lags the gateway's reader by up to
a second; a snapshot fetched the moment a client saw ``response.completed`` would lack the
answer's last tokens. The fold rebuilds the snapshot's ``Session`` and ``LiveAnswer`` from its
JSON and applies the tail with the session app's own reducers (``pipeline.sessions.state``: the
reader rule, fencing, takeovers, terminal events moving the live answer into the turns), then
writes the snapshot contract again (``pipeline.sessions.snapshot``) at the tail's last offset.

One thing the JSON does not carry: the live answer's chunk ends (where each seq ends in its
text), which a ``CONTINUE`` takeover needs to cut back a stale writer's text. The fold stands in
``UNKNOWN`` for every one but the last; a takeover that cuts back into them raises
``CannotFold`` (the gateway then rebuilds the snapshot from the log). A takeover that continues
after the last seq, the usual case, needs none of them.

Pure: no I/O, nothing gateway-specific but the snapshot contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from pipeline.sessions.snapshot import snapshot
from pipeline.sessions.state import (
    MAX_TURNS,
    LiveAnswer,
    PendingPrompt,
    Session,
    Turn,
    evolve_live,
    evolve_live_deltas,
    evolve_session,
)
from schemas.cursor import Cursor
from schemas.records import TokenDelta, TokenEvent

UNKNOWN = -1
"""A chunk end the snapshot does not carry."""

_TURN_FIELDS = frozenset(f.name for f in fields(Turn))
_PENDING_FIELDS = frozenset(f.name for f in fields(PendingPrompt))


class CannotFold(Exception):
    """A ``CONTINUE`` takeover cuts back into live text whose chunk ends the snapshot lacks."""


@dataclass(frozen=True, slots=True)
class Folded:
    body: dict[str, Any]
    """The snapshot contract, with the tail in it."""
    last_offset: int
    """The offset the new cursor names."""
    events: int
    """The conversation's events the fold applied (0: the snapshot already had them all)."""


def _turn(data: dict[str, Any]) -> Turn:
    if data.keys() <= _TURN_FIELDS:
        return Turn(**data)
    return Turn(**{k: v for k, v in data.items() if k in _TURN_FIELDS})  # a newer contract's keys


def state_of(body: dict[str, Any], after: int) -> tuple[Session, LiveAnswer]:
    """The session and live answer a snapshot at offset ``after`` shows (every event at or below
    ``after`` applied), with ``UNKNOWN`` chunk ends but the live answer's last."""
    session = Session(
        conversation_id=body["conversation_id"],
        owner=body.get("owner") or "",
        turns=tuple(_turn(t) for t in body.get("turns") or ()),
        dropped_turns=int(body.get("dropped_turns") or 0),
        pending=tuple(
            PendingPrompt(**{k: v for k, v in p.items() if k in _PENDING_FIELDS})
            for p in body.get("pending") or ()
        ),
        tokens_offset=after,
    )
    live_body = body.get("live")
    if not live_body:
        return session, LiveAnswer(tokens_offset=after)
    turn = _turn(live_body)
    ends = (UNKNOWN,) * turn.last_seq + (len(turn.answer),) if turn.last_seq >= 0 else ()
    return session, LiveAnswer(turn, ends, after)


def apply(
    session: Session, live: LiveAnswer, events: Iterable[tuple[TokenEvent, int]], *, max_turns: int
) -> tuple[Session, LiveAnswer]:
    """``events`` (each with its offset, in log order) applied as the session app applies them:
    runs of deltas at once (``evolve_live_deltas``), every other event to both parts."""
    run: list[tuple[TokenDelta, int]] = []
    for event, offset in events:
        if isinstance(event, TokenDelta):
            run.append((event, offset))
            continue
        if run:
            live, run = evolve_live_deltas(live, run), []
        session = evolve_session(session, event, offset, live_before=live, max_turns=max_turns)
        live = evolve_live(live, event, offset)
        if live.chunk_ends[-1:] == (UNKNOWN,):
            raise CannotFold(f"a takeover of {event.response_id} cuts back into the snapshot's text")
    if run:
        live = evolve_live_deltas(live, run)
    return session, live


def fold(
    body: dict[str, Any],
    *,
    after: int,
    events: Iterable[tuple[TokenEvent, int]],
    upto: int,
    epoch: str,
    partition: int,
) -> Folded:
    """``body`` (a snapshot whose cursor names offset ``after``) with ``events``, the
    conversation's events in ``(after, upto]``, folded in; its cursor then names ``upto`` (the
    conversation has no other event up to there). Finished turns the snapshot had are passed on
    as they came; keys the fold does not know are kept."""
    tail = list(events)
    last = max(after, upto)
    if not tail:
        return Folded({**body, "cursor": Cursor(epoch, partition, last).format()}, last, 0)
    session, live = state_of(body, after)
    # A session app that has dropped turns keeps as many inline as it shows; else the default.
    max_turns = len(session.turns) if session.dropped_turns and session.turns else MAX_TURNS
    session, live = apply(session, live, tail, max_turns=max_turns)
    # The snapshot's own turns go out as they came (only the new ones are written anew).
    kept = {t["response_id"]: t for t in body.get("turns") or ()}
    new = tuple(t for t in session.turns if t.response_id not in kept)
    built = snapshot(
        replace(session, turns=new),
        live,
        epoch=epoch,
        partition=partition,
        applied_upto=last,
        prompts_applied=int(body.get("prompts_applied", -1)),
    )
    built["turns"] = [kept[t.response_id] for t in session.turns if t.response_id in kept] + built["turns"]
    return Folded({**body, **built}, last, len(tail))


__all__ = ["UNKNOWN", "CannotFold", "Folded", "apply", "fold", "state_of"]
