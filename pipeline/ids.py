"""Identifiers derived, never invented: the same prompt always maps to the same answer id, so a
duplicate submission, a redelivery after a crash and a takeover all name one answer."""

from __future__ import annotations

import hashlib


def response_id(conversation_id: str, prompt_id: str) -> str:
    """The answer id of a prompt: ``r-`` + 32 hex digits of SHA-256(conversation, prompt)."""
    digest = hashlib.sha256(f"{conversation_id}\x00{prompt_id}".encode()).hexdigest()
    return f"r-{digest[:32]}"
