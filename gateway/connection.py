"""One client stream (SSE or WebSocket) as an explicit state machine.

```
CONNECTING ──subscribe──▶ CATCHING_UP ──merge done──▶ LIVE ──▶ CLOSED
     │                        │  (live events buffered)       ▲
     └────────────────────────┴───────── error / slow / shutdown ┘
```

The hub hands every live event to ``deliver`` (never blocking): while catching up it is buffered
(the merge splices it after the catch-up), when live it is queued for the writer. Both are bounded
by ``cap``: a client that falls that far behind is closed with ``slow_client`` and resumes from its
cursor, so memory stays bounded and the hub never waits for anyone. The writer takes frames in
small batches, so one blocked on a socket that stopped draining holds at most a batch; it sends
the close once the socket moves again (or the server's ping timeout drops it). A long catch-up
passed on as it is read stays within ``cap`` too: before each stretch its reader waits for the
writer to make room (``room``), and a client that does not read within the catch-up's time is
closed with ``slow_client``. Illegal transitions raise.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.entry import Entry
from gateway.errors import GatewayError, SlowClient, Unauthorized


class State(StrEnum):
    CONNECTING = "connecting"
    CATCHING_UP = "catching_up"
    LIVE = "live"
    CLOSED = "closed"


_NEXT: dict[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.CATCHING_UP, State.CLOSED}),
    State.CATCHING_UP: frozenset({State.LIVE, State.CLOSED}),
    State.LIVE: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Control:
    """A frame that is not a log event: snapshot, resync, going_away, error."""

    kind: str
    json: bytes
    cursor: str | None = None


Item = Entry | Control


class Connection:
    __slots__ = (
        "_pending",
        "_queue",
        "_room",
        "_waiter",
        "cap",
        "conversation_id",
        "error",
        "follow_up",
        "on_close",
        "partition",
        "state",
        "transport",
        "user_id",
        "verified_owner",
    )

    def __init__(self, conversation_id: str, partition: int, user_id: str, transport: str, cap: int) -> None:
        self.conversation_id = conversation_id
        self.partition = partition
        self.user_id = user_id
        self.transport = transport
        self.cap = cap
        self.state = State.CONNECTING
        self.error: GatewayError | None = None
        """Why the connection closed (None: the client went away)."""
        self.verified_owner = False
        self._pending: list[Entry] = []
        self._queue: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        """The writer waiting for frames (a bare future: an ``asyncio.Event`` per stream costs more)."""
        self._room: asyncio.Future[None] | None = None
        """A catch-up waiting for the writer to take frames (``room``)."""
        self.on_close: Callable[[Connection], None] | None = None
        """Called once when the connection closes (metrics)."""
        self.follow_up: asyncio.Task[None] | None = None
        """A long catch-up still being read (and passed on) after the stream opened."""

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _made_room(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def _move(self, to: State) -> None:
        if to not in _NEXT[self.state]:
            raise RuntimeError(f"connection cannot go from {self.state} to {to}")
        self.state = to

    # ------------------------------------------------------------------ hub side

    def deliver(self, entry: Entry) -> None:
        if self.state is State.CATCHING_UP:
            self._pending.append(entry)
            if len(self._pending) > self.cap:
                self.close(SlowClient("too many live events arrived during the catch-up"))
        elif self.state is State.LIVE:
            if len(self._queue) >= self.cap:
                self.close(SlowClient(f"more than {self.cap} frames behind; resume from your cursor"))
                return
            self._queue.append(entry)
            self._wake()

    # ------------------------------------------------------------------ resume side

    def catching_up(self) -> None:
        self._move(State.CATCHING_UP)

    def push(self, item: Item) -> None:
        """A frame ahead of everything else queued (snapshot, resync) while catching up."""
        if self.state is not State.CLOSED:
            self._queue.append(item)
            self._wake()

    def fits(self, count: int) -> bool:
        """``count`` more frames stay within ``cap`` (or nothing is queued)."""
        return not self._queue or len(self._queue) + count <= self.cap

    async def room(self, count: int, timeout_s: float) -> bool:
        """Back-pressure for a long catch-up: wait until ``count`` more frames fit (``fits``). A
        client that has not read enough within ``timeout_s`` is closed with ``slow_client``;
        False once closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.state is State.CATCHING_UP and not self.fits(count):
            self._room = loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._room
            except TimeoutError:
                self.close(SlowClient(f"more than {self.cap} frames behind during a catch-up; resume"))
            finally:
                self._room = None
        return self.state is State.CATCHING_UP

    def stream(self, entries: list[Entry], first: Control | None = None) -> None:
        """Caught-up events queued while the catch-up goes on (a long one is passed on as it is
        read, each stretch after the first once it ``fits``); ``first`` goes ahead of them."""
        if self.state is not State.CATCHING_UP:
            return
        if first is not None:
            self._queue.append(first)
        self._queue.extend(entries)
        self._wake()

    def take_pending(self) -> list[Entry]:
        pending, self._pending = self._pending, []
        return pending

    def go_live(self, entries: list[Entry], first: Control | None = None) -> None:
        """The merged catch-up is queued and live events flow directly from now on; ``first``
        goes ahead of everything queued (the WebSocket's ``subscribed`` acknowledgement)."""
        if self.state is State.CLOSED:
            return
        self._move(State.LIVE)
        if first is not None:
            self._queue.appendleft(first)
        self._queue.extend(entries)
        self._wake()

    def close(self, error: GatewayError | None = None) -> None:
        if self.state is State.CLOSED:
            return
        self._move(State.CLOSED)
        self.error = error
        self._pending.clear()
        task = self.follow_up
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if isinstance(error, (SlowClient, Unauthorized)):
            self._queue.clear()  # the client resumes from the last frame it received (an expired
            # token gets nothing more)
        self._wake()
        self._made_room()
        if self.on_close is not None:
            self.on_close(self)

    # ------------------------------------------------------------------ writer side

    def queued_items(self) -> list[Item]:
        """What is queued, without taking it (to look at a snapshot and its catch-up)."""
        return list(self._queue)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def take(self, timeout_s: float, batch: int = 64) -> list[Item] | None:
        """Up to ``batch`` frames ready to write; [] after ``timeout_s`` with nothing (time for a
        heartbeat); None once closed and drained. Frames stay queued (and count against ``cap``)
        until taken, so a writer blocked on a slow socket holds at most one batch."""
        if not self._queue:
            if self.state is State.CLOSED:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout_s):  # not wait_for: no extra task per idle stream
                    await self._waiter
            except TimeoutError:
                return []
            finally:
                self._waiter = None
            if not self._queue:
                return None if self.closed else []
        queue = self._queue
        if len(queue) <= batch:
            items = list(queue)
            queue.clear()
        else:
            items = [queue.popleft() for _ in range(batch)]
        if self._room is not None:
            self._made_room()
        return items
