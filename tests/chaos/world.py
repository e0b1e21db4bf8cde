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
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from gateway.client import Client, Follower
from infra.broker import LocalBroker, LocalCluster
from infra.process import ManagedProcess, free_port
from schemas.codec import TOKENS
from schemas.records import ResponseStarted, TokenEvent
from schemas.registry import TOKENS_TOPIC
from tests.chaos.checker import LogSide, Tally, check, offset_of
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

    def row(self) -> dict[str, Any]:
        return {"scenario": self.scenario, **self.tally.row(), "reconnects": self.reconnects}


Fault = Callable[["Run"], Awaitable[None]]


@dataclass
class Run:
    """What a fault sees: the world, the proxy in front of the gateway, a seeded random source,
    and how far the answers have got."""

    world: World
    proxy: FaultProxy
    rng: random.Random
    prompts: int
    followers: list[Follower] = field(default_factory=list)
    partitions: dict[str, int] = field(default_factory=dict)
    """Each conversation's partition (known once its first prompt is accepted)."""

    def tokens_received(self) -> int:
        return sum(1 for f in self.followers for frame in f.received if frame.get("type") == "token")

    async def streaming(self, tokens: int = 20, timeout_s: float = 60) -> None:
        """Until the followers have received ``tokens`` more deltas in all (answers are under
        way), or every answer has ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        target = self.tokens_received() + tokens
        while self.tokens_received() < target and not self.all_done():
            if loop.time() > deadline:
                raise TimeoutError("the answers did not stream")
            await asyncio.sleep(0.05)

    def all_done(self) -> bool:
        return all(finished_answers(f) >= self.prompts for f in self.followers)

    def signal(self, proc: ManagedProcess, sig: signal.Signals) -> None:
        pid = proc.pid
        assert pid is not None, f"{proc.name} is not running"
        os.kill(pid, sig)


def finished_answers(follower: Follower) -> int:
    return len({f["response_id"] for f in follower.received if f.get("type") in TERMINAL_TYPES})


async def follow(follower: Follower, prompts: int, rng: random.Random, deadline: float) -> None:
    """Short random stretches, reconnecting from the cursor, until every answer has ended; any
    failure to connect (a gateway down, paused or cut off) is retried after a short pause."""
    loop = asyncio.get_running_loop()
    while finished_answers(follower) < prompts:
        if loop.time() > deadline:
            raise TimeoutError(
                f"{follower.transport} follower of {follower.conversation_id} saw "
                f"{finished_answers(follower)} of {prompts} answers end"
            )
        try:
            conn = await follower.once(max_frames=rng.randint(3, 40), timeout_s=rng.uniform(2, 6))
        except Exception:  # noqa: BLE001 - refused, 503 while starting, a cut handshake: retry
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            continue
        if conn.ended not in ("limit", "until"):
            await asyncio.sleep(rng.uniform(0.05, 0.3))
        else:
            await asyncio.sleep(rng.uniform(0, 0.05))


async def submit(client: Client, cid: str, text: str, prompt_id: str, deadline: float) -> dict[str, Any]:
    """Until the gateway accepts it (the same ``prompt_id`` each time: accepted once)."""
    while True:
        try:
            accepted: dict[str, Any] = await client.prompt(cid, text, prompt_id=prompt_id)
            return accepted
        except Exception:  # the gateway is down or cut off: try again
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


def check_log(log: LogSide, prompt_ids: list[str], name: str) -> Tally:
    """Every accepted prompt answered exactly once."""
    tally = Tally()
    answers: dict[str, set[str]] = {p: set() for p in prompt_ids}
    for _, event in log.events:
        if isinstance(event, ResponseStarted):
            answers.setdefault(event.prompt_id, set()).add(event.response_id)
    for prompt_id, rids in answers.items():
        if not rids:
            tally.add("lost", f"{name}: prompt {prompt_id} was accepted and never answered")
        elif len(rids) > 1:
            tally.add("duplicated", f"{name}: prompt {prompt_id} answered {len(rids)} times")
    return tally


async def run(world: World, scenario: str, fault: Fault, plan: Plan, seed: int) -> Result:
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
                unique("chaos-" + re.sub(r"[^a-z0-9-]", "-", scenario)) for _ in range(plan.conversations)
            ]
            starts: dict[str, int] = {}
            for cid in cids:
                opener = client.follow(cid, transport="ws")
                await opener.once(until=lambda f: f.get("type") == "snapshot", timeout_s=30)
                cursor = opener.received[-1]["cursor"]
                starts[cid] = offset_of({"cursor": cursor})
                for i in range(plan.followers):
                    r.followers.append(
                        client.follow(cid, transport="sse" if i % 2 == 0 else "ws", cursor=cursor)
                    )
            prompt_ids = {cid: [f"{cid}-p{j}" for j in range(plan.prompts)] for cid in cids}
            text = f"Chaos [[tokens={plan.tokens}]] [[rate={plan.rate:g}]]"
            submit_deadline = time.monotonic() + plan.timeout_s / 2
            partitions = r.partitions

            async def prompts(cid: str) -> None:
                for prompt_id in prompt_ids[cid]:
                    accepted = await submit(client, cid, text, prompt_id, submit_deadline)
                    partitions[cid] = int(accepted["partition"])

            followers = asyncio.gather(
                *(follow(f, plan.prompts, random.Random(rng.random()), deadline) for f in r.followers)
            )
            submitted = asyncio.gather(*(prompts(cid) for cid in cids))
            try:
                await submitted
                await fault(r)
                proxy.heal()
                await followers
            finally:
                for task in (followers, submitted):
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await followers
        tally = Tally()
        for cid in cids:
            events = await log_of(world.stack.bootstrap, partitions[cid], cid, starts[cid] + 1)
            log = LogSide.of(events, partitions[cid])
            tally.merge(check_log(log, prompt_ids[cid], cid))
            for i, f in enumerate(x for x in r.followers if x.conversation_id == cid):
                tally.merge(check(log, f.received, after=starts[cid], name=f"{cid}/{f.transport}{i}"))
        reconnects = sum(len(f.connections) for f in r.followers)
    return Result(scenario, seed, tally, reconnects, round(time.monotonic() - began, 1))
