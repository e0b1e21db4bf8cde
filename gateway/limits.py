"""Per-user and per-connection limits: token buckets (prompts, cancels, WebSocket frames), a count
of open streams, a budget of concurrent log reads, and the checks on what a prompt may ask for."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from gateway.errors import InvalidRequest, RateLimited, TooManyConnections, TooManyReads
from gateway.models import PromptBody


@dataclass
class RateLimiter:
    """Token bucket per user: ``burst`` at once, refilled at ``per_min`` per minute. Buckets of
    users not seen for a while are forgotten (bounded to ``max_users``)."""

    per_min: float
    burst: int
    what: str = "prompts"
    """What is counted (in the error's message)."""
    max_users: int = 100_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def take(self, user: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        rate = self.per_min / 60.0
        tokens, at = self._buckets.pop(user, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[user] = (tokens, now)
            wait = (1.0 - tokens) / rate if rate > 0 else 60.0
            raise RateLimited(
                f"more than {self.per_min:g} {self.what} per minute", retry_after_s=round(wait, 3)
            )
        self._buckets[user] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)


@dataclass
class ConnectionCounter:
    """Open streams per user, capped."""

    cap: int
    _open: dict[str, int] = field(default_factory=dict)

    def acquire(self, user: str) -> None:
        count = self._open.get(user, 0)
        if count >= self.cap:
            raise TooManyConnections(f"at most {self.cap} open streams per user")
        self._open[user] = count + 1

    def release(self, user: str) -> None:
        count = self._open.get(user, 0) - 1
        if count > 0:
            self._open[user] = count
        else:
            self._open.pop(user, None)


acting_user: ContextVar[str | None] = ContextVar("acting_user", default=None)
"""The user a request (and the tasks it starts) acts for: set once the token is verified, read
where a log read takes a catch-up consumer, so every scan counts against its user's budget."""


@dataclass
class ReadBudget:
    """Log reads (catch-up consumers held) running per user, capped: one user cannot hold the
    few shared consumers every resume and snapshot needs. Reads of no user are not counted."""

    per_user: int
    _running: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def hold(self, user: str | None) -> Iterator[None]:
        if user is None:
            yield
            return
        count = self._running.get(user, 0)
        if count >= self.per_user:
            raise TooManyReads(
                f"at most {self.per_user} catch-up or snapshot reads per user at once", retry_after_s=1.0
            )
        self._running[user] = count + 1
        try:
            yield
        finally:
            left = self._running.get(user, 1) - 1
            if left > 0:
                self._running[user] = left
            else:
                self._running.pop(user, None)

    def running(self, user: str) -> int:
        return self._running.get(user, 0)


@dataclass(frozen=True, slots=True)
class PromptLimits:
    """What a prompt may ask of the deployment (cost): a model on the allowlist, a bounded
    ``max_tokens``."""

    models: frozenset[str]
    max_output_tokens: int

    def check(self, body: PromptBody) -> None:
        if body.model and body.model not in self.models:
            raise InvalidRequest(
                "model is not one this deployment serves", allowed=sorted(self.models), reason="model"
            )
        max_tokens = body.parameters.max_tokens
        if max_tokens is not None and max_tokens > self.max_output_tokens:
            raise InvalidRequest(
                f"parameters.max_tokens is over {self.max_output_tokens}", reason="max_tokens"
            )
