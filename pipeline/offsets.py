"""Which prompt offset of a partition may be committed.

Prompts of different conversations in one partition finish out of order; an offset may be
committed only when every prompt before it is fully answered, so a crash never skips an
unanswered prompt. The committable position is the lowest offset still in progress (or one past
the highest offset seen when nothing is in progress)."""

from __future__ import annotations

import heapq


class OffsetTracker:
    """Offsets received and finished in one partition (pure; no I/O)."""

    def __init__(self, start: int) -> None:
        self._start = start
        """The committed position when the partition was assigned."""
        self._highest = start - 1
        self._pending: set[int] = set()
        self._heap: list[int] = []

    def received(self, offset: int) -> None:
        if offset < self._start:
            raise ValueError(f"offset {offset} is before the assigned position {self._start}")
        self._highest = max(self._highest, offset)
        self._pending.add(offset)
        heapq.heappush(self._heap, offset)

    def done(self, offset: int) -> None:
        self._pending.discard(offset)
        while self._heap and self._heap[0] not in self._pending:
            heapq.heappop(self._heap)

    @property
    def in_progress(self) -> int:
        return len(self._pending)

    def committable(self) -> int:
        """The offset to commit: every prompt below it is done."""
        return self._heap[0] if self._heap else self._highest + 1
