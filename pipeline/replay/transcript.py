"""Conversations rebuilt from log records: one ``Turn`` per prompt, pure (no Kafka here).

Feed the records of the selected conversations in log order (per partition; partitions are
independent); ``turns()`` gives the conversations as the log holds them. Answer text follows the
reader rule (``schemas/answers.py``), exactly what clients were shown; each answer is also verified
(``pipeline/replay/verify.py``) and its findings are part of its turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.replay.verify import AnswerAudit, Finding
from schemas.answers import AnswerFold, Verdict
from schemas.records import (
    PromptRecord,
    PromptSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    TokenDelta,
    TokenEvent,
)


@dataclass
class Turn:
    """One prompt and its answer, as the log holds them (times in ms since the epoch, UTC)."""

    conversation_id: str
    prompt_id: str
    partition: int
    response_id: str | None = None
    user_id: str = ""
    device_id: str = ""
    prompt: str = ""
    model: str = ""
    submitted_at: int | None = None
    """When the gateway accepted the prompt (``conversation.prompts``)."""
    started_at: int | None = None
    first_token_at: int | None = None
    ended_at: int | None = None
    status: str = "pending"
    """pending (accepted, no answer yet), streaming, completed, failed, cancelled."""
    finish_reason: str = ""
    error_class: str = ""
    error_message: str = ""
    cancelled_by: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    attempts: int = 0
    """Generation attempts (1 + takeovers)."""
    deltas: int = 0
    """TokenDelta events in the answer as read."""
    text: str = ""
    first_offset: int | None = None
    """Offset in ``conversation.tokens`` of the answer's first event."""
    last_offset: int | None = None
    chain: str = "none"
    """intact, violations, unchained (written before schema v2), or none (no answer)."""
    violations: list[str] = field(default_factory=list)

    @property
    def ttft_ms(self) -> int | None:
        origin = self.submitted_at if self.submitted_at is not None else self.started_at
        return None if origin is None or self.first_token_at is None else self.first_token_at - origin

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "prompt_id": self.prompt_id,
            "response_id": self.response_id,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "prompt": self.prompt,
            "model": self.model,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "error_class": self.error_class,
            "error_message": self.error_message,
            "cancelled_by": self.cancelled_by,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "first_token_at": self.first_token_at,
            "ended_at": self.ended_at,
            "ttft_ms": self.ttft_ms,
            "duration_ms": self.duration_ms,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
            },
            "attempts": self.attempts,
            "deltas": self.deltas,
            "text": self.text,
            "partition": self.partition,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "chain": self.chain,
            "violations": self.violations,
        }


@dataclass
class _Answer:
    fold: AnswerFold
    audit: AnswerAudit
    first_offset: int
    last_offset: int
    deltas: int = 0
    first_token_at: int | None = None


@dataclass
class Replay:
    """Turns of the conversations whose records are fed to it."""

    _prompts: dict[tuple[str, str], tuple[int, PromptSubmitted, bool]] = field(default_factory=dict)
    """(conversation, prompt_id) -> (partition, prompt, in the selection's range)."""
    _answers: dict[str, _Answer] = field(default_factory=dict)
    events: int = 0
    """Token events fed."""

    def prompt(self, partition: int, record: PromptRecord, *, in_range: bool = True) -> None:
        """A record of ``conversation.prompts``; prompts out of range only tell when an answer
        in range was asked for."""
        if isinstance(record, PromptSubmitted):
            self._prompts.setdefault(
                (record.conversation_id, record.prompt_id), (partition, record, in_range)
            )

    def token(self, partition: int, offset: int, event: TokenEvent, value: bytes | None = None) -> None:
        self.events += 1
        answer = self._answers.get(event.response_id)
        if answer is None:
            answer = _Answer(
                AnswerFold(event.response_id), AnswerAudit(event.response_id, partition), offset, offset
            )
            self._answers[event.response_id] = answer
        answer.last_offset = offset
        answer.audit.feed(offset, event, value)
        verdict = answer.fold.apply(event)
        if isinstance(event, TokenDelta):
            answer.deltas += 1
            if verdict is Verdict.ACCEPTED and answer.first_token_at is None:
                answer.first_token_at = event.produced_at

    def finished(self, response_id: str) -> bool:
        answer = self._answers.get(response_id)
        return answer is not None and answer.fold.finished

    def findings(self) -> list[Finding]:
        return [f for a in self._answers.values() for f in a.audit.close()]

    def turns(self) -> list[Turn]:
        """Every prompt and answer fed, by conversation, then in the order they were answered."""
        turns: list[Turn] = []
        answered: set[tuple[str, str]] = set()
        for answer in self._answers.values():
            started = answer.fold.started
            if started is None:
                continue  # events of an answer whose start is outside the selection
            key = (started.conversation_id, started.prompt_id)
            answered.add(key)
            submitted = self._prompts.get(key)
            turns.append(self._turn(answer, submitted[1] if submitted else None))
        for key, (partition, prompt, in_range) in self._prompts.items():
            if in_range and key not in answered:
                turns.append(
                    Turn(
                        prompt.conversation_id,
                        prompt.prompt_id,
                        partition,
                        user_id=prompt.user_id,
                        device_id=prompt.device_id,
                        prompt=prompt.text,
                        model=prompt.model,
                        submitted_at=prompt.submitted_at,
                    )
                )
        turns.sort(
            key=lambda t: (
                t.conversation_id,
                t.first_offset is None,
                t.first_offset or 0,
                t.submitted_at or 0,
            )
        )
        return turns

    @staticmethod
    def _turn(answer: _Answer, prompt: PromptSubmitted | None) -> Turn:
        fold, started = answer.fold, answer.fold.started
        assert started is not None
        findings = answer.audit.close()
        turn = Turn(
            started.conversation_id,
            started.prompt_id,
            answer.audit.partition,
            response_id=started.response_id,
            user_id=started.user_id,
            device_id=started.device_id,
            prompt=started.prompt_text,
            model=started.model,
            submitted_at=prompt.submitted_at if prompt is not None else None,
            started_at=started.started_at,
            first_token_at=answer.first_token_at,
            status=fold.status.value,
            attempts=fold.attempt + 1,
            deltas=answer.deltas,
            text=fold.text,
            first_offset=answer.first_offset,
            last_offset=answer.last_offset,
            chain="violations" if findings else "unchained" if answer.audit.unchained else "intact",
            violations=[str(f) for f in findings],
        )
        end = fold.terminal
        if isinstance(end, ResponseCompleted):
            turn.ended_at, turn.finish_reason = end.completed_at, end.finish_reason
            turn.prompt_tokens = end.usage.prompt_tokens
            turn.completion_tokens = end.usage.completion_tokens
            turn.total_tokens = end.usage.total_tokens
        elif isinstance(end, ResponseFailed):
            turn.ended_at, turn.error_class, turn.error_message = (
                end.failed_at,
                end.error_class,
                end.error_message,
            )
        elif isinstance(end, ResponseCancelled):
            turn.ended_at, turn.cancelled_by = end.cancelled_at, end.cancelled_by_user_id
            turn.finish_reason = "cancelled"  # as the session state says it
        return turn
