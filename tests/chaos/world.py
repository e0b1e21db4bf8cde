"""The system under chaos, and one scenario run against it.

``World``: two generation workers in one group (one takes over when the other dies), the
session-state app, and a gateway behind a ``FaultProxy`` that every client goes through, all real
processes on the test broker. ``run`` drives one scenario: conversations with followers over SSE
and WebSocket that read short random stretches and reconnect from their cursor, prompts submitted
through the gateway (re-sent with the same ``prompt_id`` until accepted), the scenario's faults
while the answers stream, then the log read back and every follower judged by the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.structs import TopicPartition

from gateway.client import Client, ClientError, Connection, Follower
from gateway.wire import is_event
from infra.broker import LocalBroker, LocalCluster
from infra.process import ManagedProcess, free_port
from schemas.codec import TOKENS
from schemas.records import (
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    TokenEvent,
)
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC
from tests.chaos.checker import LogSide, Tally, check, check_answers, offset_of
from tests.chaos.proxy import FaultProxy, ProxyThread
from tests.gateway.stack import GatewayProc, Stack
from tests.harness import ServiceRunner, unique, wait_for
from tests.pipeline.helpers import start_sessions, start_worker

WORKER = {"TOKENLOG_WORKER_COALESCE_MS": "0"}
"""Every token its own event (the most events to lose, double or reorder)."""
TERMINAL_TYPES = frozenset({"response.completed", "response.failed", "response.cancelled"})


@dataclass
class Plan:
    conversations: int = 3
    followers: int = 4
    """Per conversation, alternately SSE and WebSocket."""
    prompts: int = 2
    """Per conversation, answered one after another."""
    tokens: int = 150
    rate: float = 25.0
    """Tokens per second of each answer."""
    timeout_s: float = 120.0


@dataclass
class World:
    stack: Stack
    runner: ServiceRunner
    gateway: GatewayProc
    workers: list[ManagedProcess]
    sessions: ManagedProcess
    sessions_app: tuple[str, str, int]
    """(app id, data directory, port): what a restarted session app recovers from."""
    broker: LocalBroker | None = None
    """The world's own broker (the broker scenarios stop and kill it)."""
    cluster: LocalCluster | None = None
    """Or its own cluster (the leader scenario kills a node)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of every service (replication on a cluster)."""
    broker_link: ProxyThread | None = None
    """The fault proxy between the gateway and the broker (the gateway bootstraps through it)."""
    services_link: ProxyThread | None = None
    """The fault proxy between the workers and session app and the broker."""
    gateway_env: dict[str, str] = field(default_factory=dict)
    restarts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def start(
        cls,
        bootstrap: str,
        tmp: Any,
        *,
        broker: LocalBroker | None = None,
        cluster: LocalCluster | None = None,
        env: dict[str, str] | None = None,
        broker_link: ProxyThread | None = None,
        services_link: ProxyThread | None = None,
    ) -> World:
        gateway_env = dict(env or {})
        if broker_link is not None:
            gateway_env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{broker_link.proxy.port}"
        env = dict(env or {})
        if services_link is not None:
            env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{services_link.proxy.port}"
        runner = ServiceRunner(tmp / "logs")
        group = unique("group")
        workers = [start_worker(runner, bootstrap, f"worker-{i}", group, {**WORKER, **env}) for i in range(2)]
        app = (unique("sessions"), str(tmp / "sessions"), free_port())
        sessions, sessions_url = start_sessions(
            runner, bootstrap, "sessions", app[0], data_dir=app[1], port=app[2], env=env
        )
        stack = Stack(bootstrap, runner, sessions_url=sessions_url, worker_group=group)
        gateway = stack.start_gateway("gateway", gateway_env)
        world = cls(stack, runner, gateway, workers, sessions, app, broker, cluster, env)
        world.broker_link, world.services_link, world.gateway_env = broker_link, services_link, gateway_env
        return world

    def stop(self) -> None:
        self.runner.stop_all()

    async def restart_gateway(self, proxy: FaultProxy) -> None:
        """A new gateway process (after a kill); the proxy sends new connections to it."""
        self.restarts["gateway"] += 1
        name = f"gateway-r{self.restarts['gateway']}"
        self.gateway = await asyncio.to_thread(self.stack.start_gateway, name, self.gateway_env)
        proxy.retarget("127.0.0.1", int(self.gateway.url.rsplit(":", 1)[1]))

    async def handed_over(self, worker: ManagedProcess, timeout_s: float = 60) -> None:
        """Until the workers' group has dropped ``worker`` (its session timed out) and settled
        again: the other members hold its partitions."""
        client_id = f"tokenlog-worker-{worker.name}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.bootstrap)
        await admin.start()

        async def settled_without_it() -> bool:
            [response] = await admin.describe_consumer_groups([self.stack.worker_group])
            [group] = response.to_object()["groups"]
            members = {m["client_id"] for m in group["members"]}
            return group["state"] == "Stable" and bool(members) and client_id not in members

        try:
            await wait_for(settled_without_it, timeout_s=timeout_s, interval_s=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"the group still had {client_id} after {timeout_s}s") from exc
        finally:
            await admin.close()

    async def owner_of(self, partition: int, timeout_s: float = 30) -> int:
        """The index in ``workers`` of the worker the group assigned the prompts ``partition``
        (once the group is stable and one of them holds it)."""
        names = {f"tokenlog-worker-{w.name}": i for i, w in enumerate(self.workers)}
        wanted = TopicPartition(PROMPTS_TOPIC, partition)
        owner: list[int] = []
        admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.bootstrap)
        await admin.start()

        async def found() -> bool:
            [response] = await admin.describe_consumer_groups([self.stack.worker_group])
            [group] = response.to_object()["groups"]
            if group["state"] != "Stable":
                return False
            for member in group["members"]:
                assignment = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
                if wanted in assignment.partitions() and member["client_id"] in names:
                    owner.append(names[member["client_id"]])
                    return True
            return False

        try:
            await wait_for(found, timeout_s=timeout_s, interval_s=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"no worker of the group held {wanted} within {timeout_s}s") from exc
        finally:
            await admin.close()
        return owner[0]

    async def restart_worker(self, index: int) -> None:
        """A fresh worker in the group in place of ``workers[index]`` (killed or not)."""
        self.restarts["worker"] += 1
        name = f"worker-{index}-r{self.restarts['worker']}"
        env = {**WORKER, **self.env}
        self.workers[index] = await asyncio.to_thread(
            start_worker, self.runner, self.stack.bootstrap, name, self.stack.worker_group, env
        )

    async def restart_sessions(self) -> None:
        """The session app again, same id, data directory and port: it recovers its tables."""
        self.restarts["sessions"] += 1
        app_id, data_dir, port = self.sessions_app
        name = f"sessions-r{self.restarts['sessions']}"
        self.sessions, _ = await asyncio.to_thread(
            partial(start_sessions, data_dir=data_dir, port=port, env=self.env),
            self.runner,
            self.stack.bootstrap,
            name,
            app_id,
        )


@dataclass
class Result:
    scenario: str
    seed: int
    tally: Tally
    reconnects: int
    seconds: float
    fenced_writes: int = 0
    """Writes of fenced workers the log holds (a zombie's, which no client may apply)."""
    expected_errors: Counter[str] = field(default_factory=Counter)
    """The errors the clients met that the scenario expects (the unexpected ones are the tally's
    ``errors``)."""

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            **self.tally.row(),
            "expected_errors": sum(self.expected_errors.values()),
            "fenced_writes": self.fenced_writes,
            "reconnects": self.reconnects,
        }


Fault = Callable[["Run"], Awaitable[None]]


OWN_LOAD = frozenset({"submit http 429 rate_limited"})
"""Expected in every run: the run submits all its prompts at once (8 a conversation in a long
random sequence), over the user's prompt rate; the submit loop backs off and retries."""


@dataclass(frozen=True)
class Scenario:
    """A fault and the errors clients may meet under it: labels as ``error_labels`` makes them,
    ``fnmatch`` patterns (e.g. ``"error unavailable"``, ``"broken *"``)."""

    fault: Fault
    expects: frozenset[str] = frozenset()
    prompts: int = 2
    """Prompts per conversation it needs so that answers still stream at its last fault."""

    def expected(self, label: str) -> bool:
        return any(fnmatch.fnmatchcase(label, pattern) for pattern in self.expects | OWN_LOAD)


@dataclass(frozen=True)
class Strike:
    """One fault as it struck: what, and when (ms since the epoch: the clock of the log's times)."""

    what: str
    at_ms: int


Check = Callable[[dict[str, LogSide]], Awaitable[str | None]]
"""A fault's effect judged once the logs are read: ``None``, or what did not happen."""


@dataclass
class Reader:
    """One follower and the time (ms since the epoch) each of its connections opened."""

    follower: Follower
    opened: list[tuple[int, Connection]] = field(default_factory=list)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def error_labels(conn: Connection) -> list[str]:
    """What went wrong on one connection, one label each: ``error <code>`` per error frame,
    ``close <code>`` (WebSocket), ``broken <exception>``, ``eof`` (an SSE stream the server
    ended). A connection the follower ended itself (``limit``, ``until``) or that timed out with
    nothing to read is none."""
    labels = [f"error {f.get('code')}" for f in conn.frames if f.get("type") == "error"]
    if conn.ended.startswith("close:"):
        labels.append(f"close {conn.ended.removeprefix('close:')}")
    elif conn.ended == "broken":
        labels.append(f"broken {conn.error}")
    elif conn.ended == "eof":
        labels.append("eof")
    return labels


def exception_label(exc: BaseException) -> str:
    """A refused request (``http <status> <code>``) or any other exception (``raised <name>``);
    the submit loop's are prefixed ``submit``."""
    if isinstance(exc, ClientError):
        code = exc.body.get("error", {}).get("code") if isinstance(exc.body, dict) else None
        return f"http {exc.status} {code}"
    return f"raised {type(exc).__name__}"


@dataclass
class Run:
    """What a fault sees: the world, the proxy in front of the gateway, a seeded random source,
    and how far the answers have got."""

    world: World
    proxy: FaultProxy
    rng: random.Random
    prompts: int
    readers: list[Reader] = field(default_factory=list)
    partitions: dict[str, int] = field(default_factory=dict)
    """Each conversation's partition (known once its first prompt is accepted)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Every error a follower or the submit loop met, by label (``error_labels``)."""
    strikes: list[Strike] = field(default_factory=list)
    checks: list[tuple[str, Check]] = field(default_factory=list)
    """(tally kind, check) of each fault's effect, judged after the run."""
    notes: list[tuple[str, str]] = field(default_factory=list)
    """(tally kind, detail) a fault found wrong while it ran (e.g. a proxy that cut nothing)."""

    @property
    def followers(self) -> list[Follower]:
        return [r.follower for r in self.readers]

    def strike(self, what: str) -> None:
        """The fault ``what`` strikes now (judged later: an answer must have been streaming)."""
        self.strikes.append(Strike(what, now_ms()))

    def after(self, kind: str, check: Check) -> None:
        self.checks.append((kind, check))

    def effect(self, happened: bool, detail: str) -> None:
        if not happened:
            self.notes.append(("no_effect", detail))

    def streaming_conversations(self) -> list[str]:
        """Conversations with an answer the followers have seen start and none seen end."""
        started: dict[str, str] = {}
        ended: set[str] = set()
        for f in self.followers:
            for frame in f.received:
                rid = frame.get("response_id")
                if frame.get("type") in ("response.started", "token") and isinstance(rid, str):
                    started[rid] = f.conversation_id
                elif frame.get("type") in TERMINAL_TYPES:
                    ended.add(str(rid))
        return sorted({cid for rid, cid in started.items() if rid not in ended and cid in self.partitions})

    def takeovers(self, cid: str) -> int:
        """Takeover records (``response.resumed``) the followers of ``cid`` have received."""
        return sum(
            1
            for f in self.followers
            if f.conversation_id == cid
            for frame in f.received
            if frame.get("type") == "response.resumed"
        )

    def tokens_received(self, conversations: set[str] | None = None) -> int:
        return sum(
            1
            for f in self.followers
            if conversations is None or f.conversation_id in conversations
            for frame in f.received
            if frame.get("type") == "token"
        )

    async def streaming(
        self, tokens: int = 20, timeout_s: float = 60, conversations: Iterable[str] | None = None
    ) -> None:
        """Until the followers (of ``conversations``, default all) have received ``tokens`` more
        deltas in all (answers are under way); every answer ending first is a failure (the next
        fault would strike an idle system)."""
        wanted = None if conversations is None else set(conversations)

        def streamed() -> bool:
            assert not self.all_done(), "every answer ended before the fault: make the answers longer"
            return self.tokens_received(wanted) >= target

        target = self.tokens_received(wanted) + tokens
        try:
            await wait_for(streamed, timeout_s=timeout_s)
        except TimeoutError as exc:
            raise TimeoutError(f"the answers did not stream {tokens} tokens in {timeout_s} s") from exc

    def all_done(self) -> bool:
        return all(finished_answers(f) >= self.prompts for f in self.followers)

    def signal(self, proc: ManagedProcess, sig: signal.Signals) -> None:
        pid = proc.pid
        assert pid is not None, f"{proc.name} is not running"
        os.kill(pid, sig)


def finished_answers(follower: Follower) -> int:
    return len({f["response_id"] for f in follower.received if f.get("type") in TERMINAL_TYPES})


async def follow(
    reader: Reader, prompts: int, rng: random.Random, deadline: float, errors: Counter[str]
) -> None:
    """Short random stretches, reconnecting from the cursor, until every answer has ended; every
    error is counted in ``errors`` (the scenario judges them) and the connection retried after a
    short pause."""
    follower = reader.follower
    loop = asyncio.get_running_loop()
    while finished_answers(follower) < prompts:
        if loop.time() > deadline:
            raise TimeoutError(
                f"{follower.transport} follower of {follower.conversation_id} saw "
                f"{finished_answers(follower)} of {prompts} answers end"
            )
        opened = now_ms()
        try:
            conn = await follower.once(max_frames=rng.randint(3, 40), timeout_s=rng.uniform(2, 6))
        except Exception as exc:  # noqa: BLE001 - counted: refused, 503, a cut handshake; retried
            errors[exception_label(exc)] += 1
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            continue
        reader.opened.append((opened, conn))
        errors.update(error_labels(conn))
        if conn.ended not in ("limit", "until"):
            await asyncio.sleep(rng.uniform(0.05, 0.3))
        else:
            await asyncio.sleep(rng.uniform(0, 0.05))


async def submit(
    client: Client, cid: str, text: str, prompt_id: str, *, deadline: float, errors: Counter[str]
) -> dict[str, Any]:
    """Until the gateway accepts it (the same ``prompt_id`` each time: accepted once); every
    refusal or failure is counted in ``errors``."""
    while True:
        try:
            accepted: dict[str, Any] = await client.prompt(cid, text, prompt_id=prompt_id)
            return accepted
        except Exception as exc:
            errors[f"submit {exception_label(exc)}"] += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def log_of(bootstrap: str, partition: int, cid: str, start: int) -> list[tuple[int, TokenEvent]]:
    """The conversation's events from ``start`` to the partition's end *now* (after the followers
    stopped: everything any of them received is below it, late writes of a fenced worker too)."""
    tp = TopicPartition(TOKENS_TOPIC, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start)
        events: list[tuple[int, TokenEvent]] = []
        position = start
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for msg in batch.get(tp, []):
                position = msg.offset + 1
                if msg.key == cid.encode() and msg.offset < end:
                    events.append(
                        (msg.offset, TOKENS.decode(msg.value, partition=partition, offset=msg.offset))
                    )
        return events
    finally:
        await consumer.stop()


def ended_at(event: TokenEvent) -> int | None:
    """When a terminal event ended its answer (ms since the epoch); None for other events."""
    if isinstance(event, ResponseCompleted):
        return event.completed_at
    if isinstance(event, ResponseFailed):
        return event.failed_at
    if isinstance(event, ResponseCancelled):
        return event.cancelled_at
    return None


def streaming_at(logs: Iterable[LogSide], at_ms: int) -> bool:
    """Some answer had started (by the log's own times) and not yet ended at ``at_ms``."""
    for log in logs:
        spans: dict[str, tuple[int, int]] = {}
        for _, event in log.events:
            rid, end = event.response_id, ended_at(event)
            if isinstance(event, ResponseStarted) and rid not in spans:
                spans[rid] = (event.started_at, 2**63)
            elif end is not None and rid in spans:
                spans[rid] = (spans[rid][0], min(spans[rid][1], end))
        if any(began <= at_ms < end for began, end in spans.values()):
            return True
    return False


def took_over(log: LogSide) -> bool:
    return any(isinstance(event, ResponseResumed) for _, event in log.events)


async def judge(r: Run, scenario: Scenario, logs: dict[str, LogSide]) -> tuple[Tally, Counter[str]]:
    """What the run adds to the checker: errors the scenario does not expect, faults that struck
    an idle system, faults without their effect, followers that never read on after a fault."""
    tally = Tally()
    expected: Counter[str] = Counter()
    for label, n in sorted(r.errors.items()):
        if scenario.expected(label):
            expected[label] += n
        else:
            tally.add("errors", f"{label} ({n} times), not expected here", n)
    for strike in r.strikes:
        if not streaming_at(logs.values(), strike.at_ms):
            tally.add("idle_fault", f"{strike.what} struck while no answer was streaming")
    for kind, detail in r.notes:
        tally.add(kind, detail)
    for kind, effect in r.checks:
        found = await effect(logs)
        if found is not None:
            tally.add(kind, found)
    if r.strikes:
        first = r.strikes[0].at_ms
        for reader in r.readers:
            f = reader.follower
            if not any(at > first and any(is_event(x) for x in c.frames) for at, c in reader.opened):
                tally.add(
                    "no_effect",
                    f"{f.transport} follower of {f.conversation_id} never read on after the fault",
                )
    return tally, expected


async def run(world: World, name: str, scenario: Scenario, plan: Plan, seed: int) -> Result:
    plan = replace(plan, prompts=max(plan.prompts, scenario.prompts))
    rng = random.Random(seed)
    began = time.monotonic()
    target_port = int(world.gateway.url.rsplit(":", 1)[1])
    async with FaultProxy("127.0.0.1", target_port) as proxy:
        r = Run(world, proxy, rng, plan.prompts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.timeout_s
        token = world.stack.token(unique("user"))
        async with Client(proxy.url, token) as client:
            cids = [
                unique("chaos-" + re.sub(r"[^a-z0-9-]", "-", name)[:40]) for _ in range(plan.conversations)
            ]
            starts: dict[str, int] = {}
            for cid in cids:
                opener = client.follow(cid, transport="ws")
                await opener.once(until=lambda f: f.get("type") == "snapshot", timeout_s=30)
                cursor = opener.received[-1]["cursor"]
                starts[cid] = offset_of({"cursor": cursor})
                for i in range(plan.followers):
                    transport = "sse" if i % 2 == 0 else "ws"
                    r.readers.append(Reader(client.follow(cid, transport=transport, cursor=cursor)))
            prompt_ids = {cid: [f"{cid}-p{j}" for j in range(plan.prompts)] for cid in cids}
            text = f"Chaos [[tokens={plan.tokens}]] [[rate={plan.rate:g}]]"
            submit_deadline = time.monotonic() + plan.timeout_s / 2
            partitions = r.partitions

            async def prompts(cid: str) -> None:
                for prompt_id in prompt_ids[cid]:
                    accepted = await submit(
                        client, cid, text, prompt_id, deadline=submit_deadline, errors=r.errors
                    )
                    partitions[cid] = int(accepted["partition"])

            followers = asyncio.gather(
                *(
                    follow(reader, plan.prompts, random.Random(rng.random()), deadline, r.errors)
                    for reader in r.readers
                )
            )
            submitted = asyncio.gather(*(prompts(cid) for cid in cids))
            try:
                await submitted
                await scenario.fault(r)
                proxy.heal()
                await followers
            finally:
                for task in (followers, submitted):
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await followers
        tally = Tally()
        logs: dict[str, LogSide] = {}
        for cid in cids:
            events = await log_of(world.stack.bootstrap, partitions[cid], cid, starts[cid] + 1)
            log = logs[cid] = LogSide.of(events, partitions[cid])
            acknowledged = dict.fromkeys(prompt_ids[cid], text)
            tally.merge(check_answers(log, acknowledged, conversation_id=cid, name=cid))
            for i, f in enumerate(x for x in r.followers if x.conversation_id == cid):
                tally.merge(check(log, f.received, after=starts[cid], name=f"{cid}/{f.transport}{i}"))
        run_tally, expected = await judge(r, scenario, logs)
        tally.merge(run_tally)
        reconnects = sum(len(f.connections) for f in r.followers)
    fenced = sum(len(log.fenced | log.dropped) for log in logs.values())
    return Result(name, seed, tally, reconnects, round(time.monotonic() - began, 1), fenced, expected)
