"""The in-process hub: conversation → subscribers, plus what resumes are served from.

The tail reader publishes every record of the partitions it reads, in order. For each
conversation it has seen, the hub keeps

- a **window** of its most recent events, complete from ``covered_from``: every event of the
  conversation at or after that offset is in it. It holds them packed (``gateway.entry.pack``):
  plain tuples the garbage collector stops tracking, so a full collection does not walk the window;
- an **offset index** of its events, complete from ``index_from``, so a seek reads only the
  offsets it needs instead of everything in between;
- its **subscribers** (connections), each handed every new event synchronously.

Coverage rule: the reader sees every record from its start offset on, so a conversation the hub
has never seen has **no** event at or after ``base(partition)``: resuming it from there needs no
read at all. Two budgets, least recently active conversations first:

- the **window** budget (events, ~1.4 KiB each) sheds a conversation's window but keeps its
  offset index (8 bytes an offset), so a resume from before the window still reads only the
  conversation's own offsets;
- the **index** budget (offsets, and conversations remembered) forgets a conversation whole; the
  partition's ``horizon`` remembers the last offset so forgotten, and a conversation seen again
  later is covered only from after it. Until then, a resume from the start of the log ("beginning")
  of any conversation the hub holds is a targeted read, not a scan of the partition.

A subscriber registers before its catch-up read and gets the hub's position as the splice
point: every event at or below it was published before, every later one is delivered to it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from gateway.entry import Entry, Packed, pack
from gateway.ownership import Owners
from schemas.records import ResponseStarted


class Subscriber(Protocol):
    def deliver(self, entry: Entry) -> None:
        """Take one live event; must not block (queue it, or mark itself overflowed)."""
        ...


_NO_ENTRIES: deque[Packed] = deque()
_NO_SUBSCRIBERS: frozenset[Subscriber] = frozenset()


@dataclass(eq=False, slots=True)
class Conversation:
    conversation_id: str
    partition: int
    covered_from: int
    index_from: int
    entries: deque[Packed] = field(default_factory=lambda: _NO_ENTRIES)
    """Shared and empty until the first event (a deque costs 600 bytes; idle streams follow
    conversations that may never be written); only ``Hub.publish`` appends, and replaces it first."""
    index: array[int] = field(default_factory=lambda: array("q"))
    subscribers: set[Subscriber] | frozenset[Subscriber] = _NO_SUBSCRIBERS
    """Shared and empty until the first subscriber (most conversations are never followed here)."""


@dataclass
class HubLimits:
    window_events: int = 2048
    window_total_events: int = 100_000
    index_offsets: int = 100_000
    index_total_offsets: int = 5_000_000
    conversations: int = 200_000
    """Conversations remembered (each costs ~300 bytes besides its window and index)."""


class Hub:
    def __init__(self, limits: HubLimits | None = None, owners: Owners | None = None) -> None:
        self.limits = limits or HubLimits()
        self.owners = owners or Owners()
        self.position: dict[int, int] = {}
        """Per partition, the last offset published (-1 before any)."""
        self._start: dict[int, int] = {}
        self._horizon: dict[int, int] = {}
        self.conversations: OrderedDict[str, Conversation] = OrderedDict()
        """Every conversation held, least recently active first."""
        self._windows: OrderedDict[str, Conversation] = OrderedDict()
        """Those with a window (events in memory), least recently active first."""
        self.window_total = 0
        self.index_total = 0
        self.published = 0

    # ------------------------------------------------------------------ reader side

    def start(self, partition: int, next_offset: int) -> None:
        """The reader starts reading ``partition`` at ``next_offset``."""
        self._start[partition] = next_offset
        self.position[partition] = next_offset - 1

    def backfill(self, partition: int, start: int, offsets: dict[str, list[int]]) -> bool:
        """Extend the partition's coverage back to ``start``: ``offsets`` holds, per conversation,
        the offsets of its records in ``[start, covered start)`` in order, as read from the log
        (every record there with a key; the covered start is the tail reader's, or an earlier
        backfill's). Afterwards a conversation absent from both has no event
        at or after ``start``, and a resume from before the tail reader's start is a targeted
        read. False (nothing changed) once a conversation of the partition has been forgotten."""
        reader_start = self._start[partition]
        if partition in self._horizon or start >= reader_start:  # (or an earlier backfill's start)
            return False
        limit = self.limits.index_offsets
        for conv in self.conversations.values():
            if conv.partition != partition:
                continue
            earlier = offsets.get(conv.conversation_id)
            if not earlier:  # nothing of it in [start, reader start): complete from start ...
                # ... only where it is complete from the reader's start: a window or index that
                # has dropped events since (trimmed) does not hold them because of a backfill.
                if conv.covered_from <= reader_start:
                    conv.covered_from = min(conv.covered_from, start)
                if conv.index_from <= reader_start:
                    conv.index_from = min(conv.index_from, start)
        for cid, all_found in offsets.items():
            index_from, found = start, all_found
            if len(found) > limit:
                index_from, found = found[-limit - 1] + 1, found[-limit:]
            known = self.conversations.get(cid)
            if known is None:
                new = Conversation(cid, partition, covered_from=reader_start, index_from=index_from)
                new.index = array("q", found)
                self.conversations[cid] = new
                self.conversations.move_to_end(cid, last=False)  # not active since the reader started
            else:
                known.index = array("q", found) + known.index
                known.index_from = index_from
            self.index_total += len(found)
        self._start[partition] = start
        self._forget_over_budget(None)
        return True

    def base(self, partition: int) -> int:
        """A conversation the hub does not hold has no event at or after this offset."""
        return max(self._start[partition], self._horizon.get(partition, -1) + 1)

    def advance(self, partition: int, offset: int) -> None:
        """A record that is no tokenlog event (or has no key) was read at ``offset``."""
        self.position[partition] = max(self.position[partition], offset)

    def publish(self, partition: int, conversation_id: str, entry: Entry) -> None:
        """The reader read ``entry`` of ``conversation_id`` in ``partition``."""
        self.position[partition] = entry.offset
        self.published += 1
        conv = self._conversation(conversation_id, partition)
        if conv.entries is _NO_ENTRIES:
            conv.entries = deque()
            self._windows[conversation_id] = conv
        else:
            self._windows.move_to_end(conversation_id)
        conv.entries.append(pack(entry))
        conv.index.append(entry.offset)
        self.window_total += 1
        self.index_total += 1
        if isinstance(entry.event, ResponseStarted):
            self.owners.learn(conversation_id, entry.event.user_id)
        self._trim(conv)
        for subscriber in tuple(conv.subscribers):
            subscriber.deliver(entry)

    # ------------------------------------------------------------------ connection side

    def subscribe(self, conversation_id: str, partition: int, subscriber: Subscriber) -> int:
        """Register ``subscriber``; the splice offset (the hub's position in the partition)."""
        conv = self._conversation(conversation_id, partition)
        if not isinstance(conv.subscribers, set):
            conv.subscribers = set()
        conv.subscribers.add(subscriber)
        return self.position[partition]

    def unsubscribe(self, conversation_id: str, subscriber: Subscriber) -> None:
        conv = self.conversations.get(conversation_id)
        if conv is not None and isinstance(conv.subscribers, set):
            conv.subscribers.discard(subscriber)
            if not conv.subscribers and not conv.index:
                del self.conversations[conversation_id]  # followed, never written: nothing to keep

    def from_memory(self, conversation_id: str, partition: int, after: int, upto: int) -> list[Packed] | None:
        """The conversation's events in ``(after, upto]`` if the window holds all of them, packed
        as the window keeps them (``entry.unpack`` makes each an entry as it is passed on)."""
        conv = self.conversations.get(conversation_id)
        if conv is None:
            return [] if after + 1 >= self.base(partition) else None
        if after + 1 < conv.covered_from:
            return None
        found: list[Packed] = []
        for packed in reversed(conv.entries):
            offset = packed[0]
            if offset <= after:
                break
            if offset <= upto:
                found.append(packed)
        found.reverse()
        return found

    def offsets(self, conversation_id: str, partition: int, after: int, upto: int) -> list[int] | None:
        """Offsets of the conversation's events in ``(after, upto]`` if the index holds all of them."""
        conv = self.conversations.get(conversation_id)
        if conv is None:
            return [] if after + 1 >= self.base(partition) else None
        if after + 1 < conv.index_from:
            return None
        index = conv.index
        return list(index[bisect_right(index, after) : bisect_right(index, upto)])

    def lag(self, partition: int, high_watermark: int) -> int:
        """Records in ``partition`` the reader has not published yet."""
        return max(0, high_watermark - 1 - self.position.get(partition, -1))

    # ------------------------------------------------------------------ internals

    def _conversation(self, conversation_id: str, partition: int) -> Conversation:
        conv = self.conversations.get(conversation_id)
        if conv is None:
            base = self.base(partition)
            conv = Conversation(conversation_id, partition, covered_from=base, index_from=base)
            self.conversations[conversation_id] = conv
        else:
            self.conversations.move_to_end(conversation_id)
        return conv

    def _trim(self, conv: Conversation) -> None:
        limits = self.limits
        while len(conv.entries) > limits.window_events:
            conv.covered_from = conv.entries.popleft()[0] + 1
            self.window_total -= 1
        if len(conv.index) > limits.index_offsets:
            cut = len(conv.index) // 2
            conv.index_from = conv.index[cut - 1] + 1
            del conv.index[:cut]
            self.index_total -= cut
        while self.window_total > limits.window_total_events:
            if not self._shed_window(conv):
                break
        self._forget_over_budget(conv)

    def _forget_over_budget(self, keep: Conversation | None) -> None:
        """Forget conversations (never ``keep``) until the index budgets hold again."""
        limits = self.limits
        while self.index_total > limits.index_total_offsets or len(self.conversations) > limits.conversations:
            if not self._forget_one(keep):
                break

    def _shed_window(self, keep: Conversation) -> bool:
        """Drop the least recently active conversation's window (its index stays, and so do its
        subscribers: they are live, the window only serves resumes); else shorten ``keep``'s."""
        cid, conv = next(iter(self._windows.items()))
        if conv is not keep:
            self._drop_window(cid, conv)
            return True
        if len(keep.entries) > 1:
            keep.covered_from = keep.entries.popleft()[0] + 1
            self.window_total -= 1
            return True
        return False

    def _drop_window(self, cid: str, conv: Conversation) -> None:
        if conv.entries:
            conv.covered_from = conv.entries[-1][0] + 1
        self.window_total -= len(conv.entries)
        conv.entries = _NO_ENTRIES
        del self._windows[cid]

    def _forget_one(self, keep: Conversation | None) -> bool:
        """Forget the least recently active conversation nobody follows, window and index."""
        for cid, conv in self.conversations.items():
            if conv is keep or conv.subscribers:
                continue  # followed: kept (cheap to skip, as few are followed and idle at once)
            if conv.entries is not _NO_ENTRIES:
                self._drop_window(cid, conv)
            del self.conversations[cid]
            self.index_total -= len(conv.index)
            if conv.index:
                last = conv.index[-1]
                self._horizon[conv.partition] = max(self._horizon.get(conv.partition, -1), last)
            return True
        return False


__all__ = ["Conversation", "Hub", "HubLimits", "Subscriber"]
