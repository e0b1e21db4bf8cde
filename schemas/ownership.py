"""Who owns a conversation: the rule every reader of ``conversation.prompts`` applies.

The user of the first ``PromptSubmitted`` of a conversation in its partition owns it. Applied
in log order (one partition, one order, the same for every reader), it gives every reader the
same owner, whatever raced to write first:

1. no owner yet: the prompt **claims** the conversation, its user is the owner from then on;
2. the owner's prompt is **the owner's** (answered, shown);
3. any other user's prompt is a **stranger's**: refused (not answered, not shown, not pending).

A ``CancelRequested`` never claims: the owner's is applied, anyone else's (or one for a
conversation nobody owns yet) is refused the same way.

The session app (``pipeline.sessions.state``), the generation worker (``pipeline.worker``) and,
through their answers, every gateway apply it. Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from schemas.records import CancelRequested, PromptRecord


class Claim(StrEnum):
    """What one command is to the conversation it names."""

    CLAIMS = "claims"
    """The first prompt: its user becomes the owner."""
    OWNERS = "owners"
    """The owner's own command."""
    STRANGER = "stranger"
    """Another user's command (or a cancel of a conversation nobody owns yet): refused."""


def decide(owner: str | None, command: PromptRecord) -> Claim:
    """The rule, for ``command`` read while the conversation's owner is ``owner`` (None or ""
    when nobody owns it yet)."""
    if not owner:
        return Claim.STRANGER if isinstance(command, CancelRequested) else Claim.CLAIMS
    return Claim.OWNERS if command.user_id == owner else Claim.STRANGER


def owner_after(owner: str | None, command: PromptRecord) -> str | None:
    """The owner once ``command`` is applied."""
    if decide(owner, command) is Claim.CLAIMS:
        return command.user_id
    return owner or None


__all__ = ["Claim", "decide", "owner_after"]
