"""The gateway's core, independent of HTTP: owns the hub, the tail reader, the catch-up pool, the
snapshot source and the command producer, and implements the three things every route needs —
who may touch a conversation, how a stream is opened (hydrate / resume / resync), and how
commands are written.

Opening a stream (the order matters):

1. register the connection with the hub (state ``catching_up``): the splice offset is the hub's
   position; later events are buffered for the connection;
2. with no cursor: fetch a snapshot (session service, else the log) and queue it; its cursor is
   where the resume starts (path ``snapshot`` or ``log``);
3. a cursor from another epoch or partition, one beyond retention or the log's end, or a gap
   found by the merge: queue a ``resync`` with the reason and a fresh snapshot, and resume from
   the snapshot's cursor instead;
4. catch up ``(cursor, splice]``: from the memory window when it covers the range (path
   ``memory``), else by a seek that reads only the conversation's offsets when the hub's index
   knows them (path ``seek``);
5. merge catch-up and buffered live events (``merge.py``), queue them, go ``live``.

A seek that takes more than one fetch is passed on as it is read: ``open`` returns after the
first stretch is queued, and a follow-up task queues each later stretch (each checked for order,
expected offsets and seq before it is queued, so nothing goes out ahead of a hole), then the
buffered live events, then goes ``live``. The client's first missed event therefore waits for one
fetch, however much unrelated traffic lies between the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from gateway.auth import Identity
from gateway.catchup import BeyondRetention, CatchUp
from gateway.commands import Commands
from gateway.connection import Connection, Control
from gateway.entry import Entry, Packed, make_entry, unpack
from gateway.errors import (
    Forbidden,
    GatewayError,
    ShuttingDown,
    SlowClient,
    Unavailable,
    UnknownConversation,
    WrongShard,
)
from gateway.fold import CannotFold, fold
from gateway.hub import Hub, HubLimits
from gateway.limits import ConnectionCounter, PromptLimits, RateLimiter, ReadBudget
from gateway.merge import Gap, Merger
from gateway.metrics import GatewayMetrics
from gateway.models import Accepted, CancelBody, PromptBody
from gateway.ownership import Owners
from gateway.reader import TailReader
from gateway.settings import GatewaySettings
from gateway.snapshots import Snapshot, Snapshots
from gateway.wire import control_json
from infra.broker import cluster_metadata
from infra.errors import InfraError
from infra.gcpause import GcPauses
from infra.topics import partition_for, shared_partition_count
from schemas.cursor import Cursor, Position, Sentinel, check
from schemas.errors import CursorError
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stretch:
    """Caught-up events, every offset up to ``through`` looked at; ``last``: nothing follows."""

    entries: list[Entry]
    through: int
    last: bool


async def _once(entries: list[Entry], splice: int) -> AsyncGenerator[Stretch, None]:
    yield Stretch(entries, splice, True)


FIRST_STRETCH = 64
"""A catch-up from memory longer than this opens the stream with its first events alone, as a
catch-up from the log does with its first fetch: the client has them while the rest is unpacked
(a thousand missed events took 3 ms to unpack and check before the first was written)."""
STRETCH = 1024


async def from_window(packed: list[Packed], splice: int) -> AsyncGenerator[Stretch, None]:
    """A catch-up from the memory window (every event of the conversation up to ``splice``) as
    stretches: the first ``FIRST_STRETCH`` events, then ``STRETCH`` at a time."""
    start, size = 0, FIRST_STRETCH
    while len(packed) - start > size:
        piece = packed[start : start + size]
        yield Stretch([unpack(p) for p in piece], piece[-1][0], False)
        start, size = start + size, STRETCH
    yield Stretch([unpack(p) for p in packed[start:]], splice, True)


class Resync(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Opened:
    path: str
    """How the stream was served: memory, seek, snapshot, log, or resync."""
    events: int
    """Events queued by the catch-up."""


async def resolve_epoch(settings: GatewaySettings) -> str:
    if settings.epoch:
        return settings.epoch
    cluster = await cluster_metadata(
        settings.bootstrap_servers, timeout_s=30, security=settings.kafka_security
    )
    return str(cluster["cluster_id"])


SNAPSHOT_REUSE_S = 1.0
"""How long a fetched snapshot serves the next open of the same conversation."""
RECENT_SNAPSHOTS = 10_000


class Gateway:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.owners = Owners()
        self._recent: dict[str, tuple[float, Snapshot]] = {}
        """Snapshots fetched in the last moment, oldest first."""
        self.hub = Hub(
            HubLimits(
                settings.window_events,
                settings.window_total_events,
                settings.index_offsets,
                settings.index_total_offsets,
                settings.conversations,
            ),
            self.owners,
        )
        self.limiter = RateLimiter(settings.prompt_rate_per_min, settings.prompt_burst)
        self.cancels = RateLimiter(settings.cancel_rate_per_min, settings.cancel_burst, "cancels")
        self.frames = RateLimiter(settings.ws_frame_rate_per_min, settings.ws_frame_burst, "WebSocket frames")
        """Per user, the WebSocket frames other than ``subscribe`` (the app takes one a frame)."""
        self.reads = ReadBudget(settings.reads_per_user)
        self.prompt_limits = PromptLimits(frozenset(settings.models), settings.max_output_tokens)
        self.counter = ConnectionCounter(settings.max_connections_per_user)
        self.connections: set[Connection] = set()
        self.epoch = ""
        self.partition_count = 0
        self.served: frozenset[int] = frozenset()
        self.draining = False
        self._reader: TailReader | None = None
        self._catchup: CatchUp | None = None
        self._snapshots: Snapshots | None = None
        self._producer: AIOKafkaProducer | None = None
        pause = self.metrics.gc_pause
        self._gc_pauses = GcPauses(lambda generation, seconds: pause.labels(str(generation)).observe(seconds))
        self._commands: Commands | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.settings
        self._gc_pauses.install()
        self.epoch = await resolve_epoch(s)
        try:  # the same co-partitioning check as the worker's and the session app's
            self.partition_count = await shared_partition_count(
                s.bootstrap_servers, (PROMPTS_TOPIC, TOKENS_TOPIC), s.kafka_security
            )
        except InfraError as exc:
            raise Unavailable(str(exc)) from exc
        served = s.partitions or tuple(range(self.partition_count))
        self.served = frozenset(served)
        self._catchup = CatchUp(
            s.bootstrap_servers,
            size=s.catchup_consumers,
            timeout_s=s.catchup_timeout_s,
            partitions=served,
            security=s.kafka_security,
            acquire_timeout_s=s.catchup_acquire_timeout_s,
            budget=self.reads,
        )
        await self._catchup.warm()
        self._snapshots = Snapshots(
            sessions_url=s.sessions_url,
            service_token=s.service_token,
            timeout_s=s.sessions_timeout_s,
            epoch=self.epoch,
            catchup=self._catchup,
            position=lambda p: self.hub.position[p],
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
            request_timeout_ms=int(s.produce_timeout_s * 1000),
            client_id="tokenlog-gateway",
            **s.kafka_security.client_kwargs(),
        )
        await asyncio.wait_for(self._producer.start(), 30)
        self._commands = Commands(self._producer, timeout_s=s.produce_timeout_s, markers=s.markers)
        self._reader = TailReader(
            s.bootstrap_servers,
            served,
            self.hub,
            self.epoch,
            self.metrics,
            backfill_records=s.backfill_records,
            security=s.kafka_security,
        )
        await self._reader.start()

    async def stop(self) -> None:
        self._gc_pauses.uninstall()
        self.drain()
        if self._reader is not None:
            await self._reader.stop()
        if self._catchup is not None:
            await self._catchup.stop()
        if self._snapshots is not None:
            await self._snapshots.close()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 5)

    def drain(self) -> None:
        """Shutdown: tell every client to resume elsewhere; refuse new streams."""
        self.draining = True
        for conn in tuple(self.connections):
            conn.close(ShuttingDown("this gateway is shutting down; resume from your cursor"))

    def ready(self) -> tuple[bool, dict[str, object]]:
        reader = self._reader
        if reader is None:
            return False, {"reason": "starting"}
        lags = reader.lags()
        reachable = time.monotonic() - reader.last_probe_ok < 5.0
        caught_up = all(lag <= self.settings.ready_max_lag for lag in lags.values())
        detail: dict[str, object] = {
            "broker_reachable": reachable,
            "reader_lag": sum(lags.values()),
            "indexed": reader.indexed,
            "draining": self.draining,
        }
        return reachable and caught_up and not self.draining, detail

    # ------------------------------------------------------------------ placement and ownership

    def partition_of(self, conversation_id: str) -> int:
        partition = partition_for(conversation_id, self.partition_count)
        if partition not in self.served:
            raise WrongShard(f"partition {partition} is served by another gateway shard")
        return partition

    @property
    def snapshots(self) -> Snapshots:
        assert self._snapshots is not None
        return self._snapshots

    async def snapshot(self, conversation_id: str, upto: int | None = None) -> Snapshot:
        """The conversation's snapshot with every event this gateway has read for it up to
        ``upto`` (default: all it has read) folded in (``fold.py``): it never trails the
        stream. One fetched within the last ``SNAPSHOT_REUSE_S`` is used again (opening a stream
        checks the owner and then hydrates), brought up to date by the same fold."""
        now = time.monotonic()
        recent = self._recent.get(conversation_id)
        if recent is not None and now - recent[0] < SNAPSHOT_REUSE_S:
            fetched, snap = recent
        else:
            snap = await self.snapshots.get(conversation_id, self.partition_of(conversation_id))
            fetched = time.monotonic()
        snap = await self._fold(conversation_id, snap, upto)
        if snap.owner:
            self.owners.learn(conversation_id, snap.owner)
        self._recent.pop(conversation_id, None)
        self._recent[conversation_id] = (fetched, snap)
        # Oldest first: those past their reuse (a snapshot may hold megabytes), then any over the count.
        while self._recent:
            first = next(iter(self._recent))
            if len(self._recent) <= RECENT_SNAPSHOTS and now - self._recent[first][0] < SNAPSHOT_REUSE_S:
                break
            del self._recent[first]
        return snap

    async def _fold(self, cid: str, snap: Snapshot, upto: int | None) -> Snapshot:
        """``snap`` with the conversation's events in ``(snap.cursor, upto]`` folded in, read as a
        resume reads them (the memory window, else a seek). A takeover the fold cannot apply is
        answered with a snapshot rebuilt from the log; a tail that cannot be read (a gap, beyond
        retention) leaves the snapshot as the session app made it (consistent at its cursor: a
        stream spliced there still gets every event once), with a warning."""
        partition, after = snap.cursor.partition, snap.cursor.last_offset
        top = self.hub.position.get(partition, -1) if upto is None else upto
        if top <= after:
            self.metrics.snapshot_folds.labels("current").inc()
            return snap
        try:
            tail = await self._tail(cid, partition, after, top)
            folded = fold(
                snap.body,
                after=after,
                events=((e.event, e.offset) for e in tail),
                upto=top,
                epoch=snap.cursor.epoch,
                partition=partition,
            )
        except CannotFold as exc:
            log.info("snapshot rebuilt from the log: %s", exc)
            self.metrics.snapshot_folds.labels("log").inc()
            return await self.snapshots.from_log(cid, partition)
        except (Resync, Gap) as exc:
            log.warning("snapshot served without the gateway's tail, which could not be read: %s", exc)
            self.metrics.snapshot_folds.labels("unread").inc()
            return snap
        self.metrics.snapshot_folds.labels("folded" if folded.events else "current").inc()
        return Snapshot(
            folded.body,
            Cursor(snap.cursor.epoch, partition, folded.last_offset),
            snap.source,
            snap.exists or folded.events > 0,
        )

    async def _tail(self, cid: str, partition: int, after: int, upto: int) -> list[Entry]:
        """The conversation's events in ``(after, upto]``, gap-checked (``after < upto``, and
        ``upto`` at most the hub's position)."""
        start, expected, _, chunks = await self._catch_up(cid, partition, after, upto, ask_snapshot=False)
        merger = Merger(start, upto, expected)
        found: list[Entry] = []
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                found += merger.feed(chunk.entries, chunk.through)
        return found + merger.finish(())

    async def owner_of(self, conversation_id: str) -> str | None:
        """The conversation's owner as the log names it (``ownership.py``: learned only from
        authoritative sources), or None while none of them knows one (nobody has written to it
        yet, or the session app has not applied the first prompt yet)."""
        owner = self.owners.get(conversation_id)
        if owner is None:
            snap = await self.snapshot(conversation_id)
            self._whose(snap)
            owner = snap.owner or None
        return owner

    def _whose(self, snap: Snapshot) -> None:
        """A snapshot with content but no owner cannot say whose it is: refused, to everyone."""
        if not snap.owner and snap.has_content:
            raise Unavailable("the conversation's owner is not known yet; retry")

    async def authorize(self, conversation_id: str, identity: Identity) -> None:
        owner = await self.owner_of(conversation_id)
        if owner is not None and owner != identity.user_id:
            raise Forbidden("this conversation belongs to another user")

    async def read(self, conversation_id: str, identity: Identity) -> Snapshot:
        """``GET /v1/conversations/{cid}``: the snapshot, for its owner only (checked on the
        snapshot itself too, whatever the cache said)."""
        await self.authorize(conversation_id, identity)
        snap = await self.snapshot(conversation_id)
        self._whose(snap)
        if snap.owner and snap.owner != identity.user_id:
            raise Forbidden("this conversation belongs to another user")
        if not snap.exists:
            raise UnknownConversation("no such conversation")
        return snap

    async def _settle(self, conversation_id: str, partition: int, identity: Identity, offset: int) -> None:
        """A prompt written at ``offset`` for a conversation whose owner was not known: wait
        (``owner_wait_s``) for an authoritative owner as of that offset (the session app having
        applied the prompts partition past it, or an answer's ``ResponseStarted``). Not the
        caller: ``Forbidden`` (the worker skips the prompt). No answer in time: ``Unavailable``
        (the prompt is in the log; a retry with the same prompt_id settles it again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.owner_wait_s
        pause = 0.01
        while True:
            owner = self.owners.get(conversation_id)
            left = deadline - loop.time()
            if owner is None and left > 0:
                found = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        found = await self.snapshots.owner_as_of(conversation_id, partition)
                if found is not None and found[0] and found[1] >= offset:
                    owner = self.owners.learn(conversation_id, found[0])
            if owner is not None:
                if owner != identity.user_id:
                    self.metrics.commands.labels("prompt", "forbidden").inc()
                    raise Forbidden("this conversation belongs to another user")
                return
            if loop.time() >= deadline:
                self.metrics.commands.labels("prompt", "unsettled").inc()
                raise Unavailable(
                    "who owns this new conversation is not settled yet; retry with the same prompt_id",
                    retry_after_s=1,
                )
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.2)

    # ------------------------------------------------------------------ commands

    @property
    def commands(self) -> Commands:
        assert self._commands is not None
        return self._commands

    async def submit_prompt(self, conversation_id: str, identity: Identity, body: PromptBody) -> Accepted:
        """Known owner: the caller's prompt is written (202), anyone else's refused unwritten
        (403). Owner not known: written, then settled (``_settle``): 202 for the owner, 403 for
        anyone else, 503 when it cannot be told in time."""
        partition = self.partition_of(conversation_id)
        self.prompt_limits.check(body)
        owner = await self.owner_of(conversation_id)
        if owner is not None and owner != identity.user_id:
            raise Forbidden("this conversation belongs to another user")
        self.limiter.take(identity.user_id)
        try:
            accepted = await self.commands.prompt(conversation_id, identity.user_id, body)
        except GatewayError as exc:
            self.metrics.commands.labels("prompt", exc.code).inc()
            raise
        if owner is None:
            await self._settle(conversation_id, partition, identity, accepted.offset)
        self.metrics.commands.labels("prompt", "duplicate" if accepted.duplicate else "accepted").inc()
        return accepted

    async def cancel(self, conversation_id: str, identity: Identity, body: CancelBody) -> Accepted:
        self.partition_of(conversation_id)
        owner = await self.owner_of(conversation_id)
        if owner is None:
            raise UnknownConversation("no such conversation")
        if owner != identity.user_id:
            raise Forbidden("this conversation belongs to another user")
        try:
            self.cancels.take(identity.user_id)
        except GatewayError as exc:
            self.metrics.commands.labels("cancel", exc.code).inc()
            raise
        accepted = await self.commands.cancel(conversation_id, identity.user_id, body)
        self.metrics.commands.labels("cancel", "accepted").inc()
        return accepted

    # ------------------------------------------------------------------ streams

    def connect(self, conversation_id: str, identity: Identity, transport: str) -> Connection:
        if self.draining:
            raise ShuttingDown("this gateway is shutting down; connect to another")
        partition = self.partition_of(conversation_id)
        self.counter.acquire(identity.user_id)
        conn = Connection(conversation_id, partition, identity.user_id, transport, self.settings.queue_frames)
        conn.on_close = self._closed
        self.connections.add(conn)
        self.metrics.connections.labels(transport).inc()
        return conn

    def _closed(self, conn: Connection) -> None:
        if isinstance(conn.error, SlowClient):
            self.metrics.slow_closes.labels(conn.transport).inc()

    def disconnect(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.counter.release(conn.user_id)
            self.metrics.connections.labels(conn.transport).dec()
        self.hub.unsubscribe(conn.conversation_id, conn)
        if conn.state.value != "closed":
            conn.close()

    async def open(
        self, conn: Connection, position: Position | None, greeting: Callable[[str], Control] | None = None
    ) -> Opened:
        """Steps 1-5 of the module docstring; raises only for errors that end the stream."""
        started = time.perf_counter()
        cid, partition = conn.conversation_id, conn.partition
        conn.catching_up()
        splice = self.hub.subscribe(cid, partition, conn)
        path = "memory"
        try:
            if position is None:
                snap = await self.snapshot(cid, upto=splice)
                self._check_owner(conn, snap)
                conn.push(
                    Control(
                        "snapshot",
                        control_json("snapshot", cursor=str(snap.cursor), conversation=snap.body),
                        str(snap.cursor),
                    )
                )
                path = "log" if snap.source == "log" else "snapshot"
                after = snap.cursor.last_offset
            elif position is Sentinel.NOW:
                after = splice
            elif position is Sentinel.BEGINNING:
                start, _ = await self._catchup_pool.bounds(partition)
                after = start - 1
            else:
                try:
                    after = check(position, epoch=self.epoch, partition=partition).last_offset
                except CursorError as exc:
                    raise Resync(exc.reason, str(exc)) from exc
            after, expected, read_path, chunks = await self._catch_up(cid, partition, after, splice)
            if position is not None:
                path = read_path
            merger = Merger(after, splice, expected)
            handed_on = False
            try:
                first = await anext(chunks)
                head = merger.feed(first.entries, first.through)
                if not first.last:  # a long catch-up: pass on what is read as it is read
                    cap = conn.cap
                    conn.stream(head[:cap], greeting(path) if greeting is not None else None)
                    conn.follow_up = asyncio.create_task(
                        self._follow_up(conn, merger, chunks, path, started, rest=head[cap:])
                    )
                    self.metrics.resumes.labels(path).inc()  # counted as it opens; timed when it ends
                    handed_on = True
                    return Opened(path, len(head))
            finally:
                if not handed_on:
                    await chunks.aclose()
            merged = head + merger.finish(conn.take_pending())
        except (Resync, Gap) as exc:
            reason = exc.reason if isinstance(exc, Resync) else "gap"
            merged = await self._resync(conn, reason, str(exc), splice)
            path = "resync"
        conn.go_live(merged, greeting(path) if greeting is not None else None)
        self._opened(path, started)
        return Opened(path, len(merged))

    def _opened(self, path: str, started: float) -> None:
        self.metrics.resumes.labels(path).inc()
        self.metrics.resume_seconds.labels(path).observe(time.perf_counter() - started)

    async def _follow_up(
        self,
        conn: Connection,
        merger: Merger,
        chunks: AsyncGenerator[Stretch, None],
        path: str,
        started: float,
        *,
        rest: list[Entry],
    ) -> None:
        """The rest of a long catch-up, after ``open`` returned: ``rest`` of the first stretch,
        then each stretch queued as it is read (checked as far as it goes), then the buffered live
        events, then live. A gap found on the way is answered with a resync, as in ``open``; an
        error ends the stream."""
        try:
            try:
                async with contextlib.aclosing(chunks):
                    if not await self._pass_on(conn, rest):
                        return
                    async for chunk in chunks:
                        if not await self._pass_on(conn, merger.feed(chunk.entries, chunk.through)):
                            return
                merged = merger.finish(conn.take_pending())
            except (Resync, Gap) as exc:
                reason = exc.reason if isinstance(exc, Resync) else "gap"
                merged = await self._resync(conn, reason, str(exc), merger.splice)
                path = "resync"
                self.metrics.resumes.labels(path).inc()
        except GatewayError as exc:
            conn.close(exc)
            return
        except Exception:  # the stream ends with an error, the gateway keeps serving
            log.exception("catch-up of a %s stream failed", conn.transport)
            conn.close(Unavailable("the catch-up failed; resume from your cursor"))
            return
        conn.go_live(merged)
        self.metrics.resume_seconds.labels(path).observe(time.perf_counter() - started)

    async def _pass_on(self, conn: Connection, entries: list[Entry]) -> bool:
        """Back-pressure: ``entries`` queued at most ``cap`` at a time, each piece once it fits
        (the writer took enough). A client that reads nothing is closed as slow within the
        catch-up's time, and the read ends (False)."""
        cap = conn.cap
        for start in range(0, len(entries), cap):
            piece = entries[start : start + cap]
            if not await conn.room(len(piece), self.settings.catchup_timeout_s):
                return False
            conn.stream(piece)
            await asyncio.sleep(0)  # let the writer send what is queued
        return True

    @property
    def _catchup_pool(self) -> CatchUp:
        assert self._catchup is not None
        return self._catchup

    def _check_owner(self, conn: Connection, snap: Snapshot) -> None:
        self._whose(snap)
        if snap.owner and snap.owner != conn.user_id:
            raise Forbidden("this conversation belongs to another user")
        if snap.owner:
            conn.verified_owner = True

    async def _resync(self, conn: Connection, reason: str, message: str, splice: int) -> list[Entry]:
        log.info("resync of a %s stream: %s", conn.transport, reason)
        snap = await self.snapshot(conn.conversation_id, upto=splice)
        self._check_owner(conn, snap)
        conn.push(
            Control(
                "resync",
                control_json(
                    "resync", reason=reason, message=message, cursor=str(snap.cursor), conversation=snap.body
                ),
                str(snap.cursor),
            )
        )
        after = snap.cursor.last_offset
        try:
            after, expected, _, chunks = await self._catch_up(
                conn.conversation_id, conn.partition, after, splice
            )
            merger = Merger(after, splice, expected)
            merged: list[Entry] = []
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    merged += merger.feed(chunk.entries, chunk.through)
            return merged + merger.finish(conn.take_pending())
        except (Resync, Gap) as exc:  # even the fresh snapshot cannot be spliced: let the client retry
            raise Unavailable(f"cannot resume from a fresh snapshot either ({exc}); retry") from exc

    async def _catch_up(
        self, cid: str, partition: int, after: int, splice: int, *, ask_snapshot: bool = True
    ) -> tuple[int, list[int] | None, str, AsyncGenerator[Stretch, None]]:
        """Where the catch-up starts (``after``, or later when the snapshot shows the conversation
        has nothing before), the offsets expected in ``(after, splice]``, the path, and the
        conversation's events there as stretches (one from memory; one per fetch from the log).
        ``ask_snapshot`` False: the caller is building the snapshot (its tail), so it is not asked."""
        if after > splice:
            _, end = await self._catchup_pool.bounds(partition)
            if after >= end:
                raise Resync("unknown_position", f"offset {after} is beyond the end of the log ({end})")
            return after, None, "memory", _once([], splice)  # the client is ahead of this gateway's reader
        memory = self.hub.from_memory(cid, partition, after, splice)
        if memory is not None:
            return after, None, "memory", from_window(memory, splice)
        expected = self.hub.offsets(cid, partition, after, splice)
        if expected is None and ask_snapshot:
            # Nothing here says where the conversation's events are (``beginning``, or a cursor
            # from before the index): rather than scan the partition, ask the snapshot. A
            # conversation it does not know has no event up to its cursor.
            snap = await self.snapshot(cid)
            if not snap.exists and snap.cursor.last_offset > after:
                return await self._catch_up(cid, partition, snap.cursor.last_offset, splice)
        return after, expected, "seek", self._read(cid, partition, after, splice, expected)

    async def _read(
        self, cid: str, partition: int, after: int, splice: int, expected: list[int] | None
    ) -> AsyncGenerator[Stretch, None]:
        chunks = self._catchup_pool.chunks(partition, cid.encode(), after + 1, splice, expected)
        async with contextlib.aclosing(chunks):
            done = False
            try:
                async for chunk in chunks:
                    done = chunk.last
                    entries = [
                        e
                        for offset, value in chunk.records
                        if (e := make_entry(value, epoch=self.epoch, partition=partition, offset=offset))
                        is not None
                    ]
                    yield Stretch(entries, chunk.through, chunk.last)
            except BeyondRetention as exc:
                raise Resync("beyond_retention", str(exc)) from exc
        if not done:
            yield Stretch([], splice, True)  # an empty range (nothing was read)

    def check_entry_owner(self, conn: Connection, entry: Entry) -> None:
        """Before the first event reaches a stream whose owner was unknown: it must be the user's."""
        if conn.verified_owner:
            return
        owner = self.owners.get(conn.conversation_id)
        if owner is None:
            user = getattr(entry.event, "user_id", None)
            owner = self.owners.learn(conn.conversation_id, user) if isinstance(user, str) else None
        if owner is None:
            raise Unavailable("the conversation's owner is not known here yet; resume")
        if owner != conn.user_id:
            raise Forbidden("this conversation belongs to another user")
        conn.verified_owner = True

    def gauges(self) -> None:
        self.metrics.client_lag.set(max((c.queued for c in self.connections), default=0))
        self.metrics.window_events.set(self.hub.window_total)
        self.metrics.conversations.set(len(self.hub.conversations))
        if self._catchup is not None:
            self.metrics.catchup_records.set(self._catchup.records_read)
