"""Vercel AI SDK compatibility: the UI message stream protocol (v1) over tokenlog.

- ``POST /api/chat``: the body ``useChat``'s default transport sends (``{id, messages, trigger,
  messageId}``); the chat ``id`` is the conversation, the last user message's ``id`` the
  ``prompt_id`` (so a retried send is idempotent) and its text parts the prompt. Answers with the
  answer as a UI message stream.
- ``GET /api/chat/{id}/stream``: ``useChat({resume: true})`` after a reload: the answer being
  written, from its first token (the text so far from the snapshot, then live), or 204 when none.

Wire (sans I/O here): SSE ``data:`` lines of ``start``, ``text-start``, ``text-delta``, ``text-end``,
``finish`` (``abort`` for a cancelled answer, ``error`` for a failed one), then ``data: [DONE]``;
header ``x-vercel-ai-ui-message-stream: v1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import InvalidRequest

HEADERS = {
    "x-vercel-ai-ui-message-stream": "v1",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE = b"data: [DONE]\n\n"


def part(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def last_user_prompt(messages: Any) -> tuple[str, str] | None:
    """(message id, text) of the last user message of a ``useChat`` request, or None.
    ``InvalidRequest`` when its parts are not a list of objects or a text part's text is not a
    string (a 400, never a crash)."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            parts = message.get("parts") or []
            if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
                raise InvalidRequest("a message's parts are a list of objects")
            texts = [p.get("text", "") for p in parts if p.get("type") == "text"]
            if not all(isinstance(t, str) for t in texts):
                raise InvalidRequest("a text part's text is a string")
            text = "".join(texts)
            message_id = message.get("id")
            if isinstance(message_id, str) and text:
                return message_id, text
            return None
    return None


@dataclass
class AnswerStream:
    """Turns one answer's tokenlog frames into UI message stream parts."""

    response_id: str
    started: bool = False
    ended: bool = False
    attempt: int = 0
    seen_seq: int = -1
    _parts: list[bytes] = field(default_factory=list)

    def done(self) -> bool:
        return self.ended

    def _start(self) -> Iterator[bytes]:
        if not self.started:
            self.started = True
            yield part({"type": "start", "messageId": self.response_id})
            yield part({"type": "text-start", "id": self.response_id})

    def from_turn(self, turn: dict[str, Any]) -> Iterator[bytes]:
        """The answer's state in a snapshot (live or finished): its text so far, maybe its end."""
        yield from self._start()
        self.attempt = int(turn.get("attempt", 0))
        self.seen_seq = int(turn.get("last_seq", -1))
        if turn.get("answer"):
            yield part({"type": "text-delta", "id": self.response_id, "delta": turn["answer"]})
        status = turn.get("status")
        if status and status != "streaming":
            yield from self._end(status, turn.get("error_message") or turn.get("error_class") or "")

    def from_frame(self, frame: dict[str, Any]) -> Iterator[bytes]:
        """One log event of the conversation (others' answers are ignored)."""
        if self.ended or frame.get("response_id") != self.response_id:
            return
        kind = frame["type"]
        attempt = int(frame.get("attempt", 0))
        if attempt < self.attempt:
            return  # a fenced writer
        if kind == "response.started":
            yield from self._start()
        elif kind == "response.resumed":
            self.attempt = attempt
            if frame.get("mode") == "RESTART":
                self.seen_seq = -1  # the SDK cannot take text back: the restart is appended
            else:
                self.seen_seq = min(self.seen_seq, int(frame["resumed_after_seq"]))
        elif kind == "token":
            if attempt == self.attempt and int(frame["seq"]) == self.seen_seq + 1:
                yield from self._start()
                self.seen_seq += 1
                yield part({"type": "text-delta", "id": self.response_id, "delta": frame["text"]})
        elif kind in ("response.completed", "response.failed", "response.cancelled"):
            yield from self._start()
            yield from self._end(kind.removeprefix("response."), frame.get("error_message", ""))

    def _end(self, status: str, error: str) -> Iterator[bytes]:
        self.ended = True
        yield part({"type": "text-end", "id": self.response_id})
        if status == "failed":
            yield part({"type": "error", "errorText": error or "the answer failed"})
        elif status == "cancelled":
            yield part({"type": "abort"})
        else:
            yield part({"type": "finish"})
        yield DONE
