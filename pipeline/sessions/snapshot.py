"""The snapshot contract: what ``GET /sessions/{conversation_id}`` returns and the gateway
hydrates a new device from.

```
{
  "conversation_id": "...",
  "owner": "user id of the first prompt",
  "partition": 3,
  "cursor": "1.<epoch>.3.1041",     # the last tokens event this snapshot reflects
  "turns": [Turn, ...],             # finished turns, oldest first (the last max_turns)
  "dropped_turns": 0,               # older finished turns not inline (replay has them)
  "live": Turn | null,              # the answer being written, with its text so far
  "pending": [{"prompt_id", "text", "submitted_at", "device_id"}, ...],
  "prompts_applied": 977            # owner and pending are as of this conversation.prompts offset
}
```

``prompts_applied`` (added in a backward-compatible way: older readers ignore it) is the last
offset of the partition of ``conversation.prompts`` applied (-1: none known): every prompt of the
conversation at or below it is reflected, so ``owner`` is the owner as of that offset (the
gateway waits for it to pass a prompt it wrote before it tells the prompt's user whether the
conversation is theirs). The 404 answer for an unknown conversation carries it too.

Splice rule: a client that renders the snapshot then resumes the live stream *after*
``cursor`` sees every later event exactly once (the cursor names the last event applied, as
every cursor does). ``live.last_seq`` is the last delta included in ``live.answer``.
"""

from __future__ import annotations

from typing import Any

from pipeline.sessions.state import LiveAnswer, Session, to_dict
from schemas.cursor import Cursor


def snapshot(
    session: Session,
    live: LiveAnswer,
    *,
    epoch: str,
    partition: int,
    applied_upto: int = -1,
    prompts_applied: int = -1,
) -> dict[str, Any]:
    """``applied_upto``: the last offset of the partition applied to the tables (every event of
    the conversation at or below it is in ``session`` and ``live``); it moves the cursor past
    other conversations' events so a resume from it has less to read. ``prompts_applied``: the
    same for the prompts partition (the session's own last prompt counts too)."""
    last = max(session.tokens_offset, live.tokens_offset, applied_upto)
    live_prompt = live.turn.prompt_id if live.turn is not None else None
    return {
        "conversation_id": session.conversation_id,
        "owner": session.owner,
        "partition": partition,
        "cursor": Cursor(epoch, partition, last).format(),
        "turns": to_dict(session.turns),
        "dropped_turns": session.dropped_turns,
        "live": to_dict(live.turn) if live.turn is not None else None,
        # A prompt whose answer is already live is not pending (its event may trail the answer's).
        "pending": to_dict(tuple(p for p in session.pending if p.prompt_id != live_prompt)),
        "prompts_applied": max(session.prompts_offset, prompts_applied),
    }
