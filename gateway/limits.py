"""Per-user limits: a token bucket for prompts and a count of open streams."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.errors import RateLimited, TooManyConnections


@dataclass
class RateLimiter:
    """Token bucket per user: ``burst`` at once, refilled at ``per_min`` per minute. Buckets of
    users not seen for a while are forgotten (bounded to ``max_users``)."""

    per_min: float
    burst: int
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
            raise RateLimited(f"more than {self.per_min:g} prompts per minute", retry_after_s=round(wait, 3))
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
