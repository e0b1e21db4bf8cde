"""The faults, each an async function of a ``Run`` that starts once the prompts are accepted and
returns when its fault is over (the followers then finish reading and the checker judges), with
the errors clients may meet under it. Every fault marks the moment it strikes (``Run.strike``:
an answer must be streaming then, by the log's own times) and what it must have done
(``Run.effect`` now, ``Run.after`` once the logs are read)."""

from __future__ import annotations

import asyncio
import signal

from tests.chaos.checker import LogSide
from tests.chaos.proxy import FaultProxy, ProxyThread
from tests.chaos.world import Check, Run, Scenario, took_over
from tests.harness import wait_for
from tests.pipeline.helpers import snapshot_at

DROPPED = frozenset(
    {"broken *", "close 1006", "eof", "raised InvalidMessage", "raised ConnectionClosedError"}
)
"""A connection or handshake cut, or refused while the gateway is down (at the proxy in front
of it: the client's TCP link ends without a close frame)."""
GOING_AWAY = frozenset({"error going_away", "close 1012"})
"""A gateway shutting down tells its clients so (after SIGKILL, nothing does)."""
UNAVAILABLE = frozenset({"error unavailable", "close 1013", "http 503 unavailable"})
"""The gateway cannot reach Kafka in time."""
READS_LIMITED = frozenset({"error too_many_reads", "close 4429", "http 429 too_many_reads"})
"""Every client of the user catching up at once on a fresh gateway (cold window cache) meets the
per-user budget of log reads, and retries."""
SLOW = frozenset({"error slow_client", "close 4000"})
"""A client behind a thin pipe fell too far behind and resumes from its cursor."""


async def owner_of_a_streaming_conversation(r: Run) -> tuple[str, int]:
    """A conversation whose answer is streaming, and the index of the worker that owns it."""
    streaming = r.streaming_conversations()
    assert streaming, "no answer is streaming"
    cid = streaming[0]
    return cid, await r.world.owner_of(r.partitions[cid])


def on_partition(r: Run, partition: int) -> list[str]:
    return [cid for cid, p in r.partitions.items() if p == partition]


async def gateway_killed(r: Run) -> None:
    """SIGKILL mid-answer; a new gateway process comes up (the proxy points at it)."""
    await r.streaming(30)
    r.strike("gateway SIGKILL")
    r.world.gateway.proc.kill()
    await asyncio.sleep(r.rng.uniform(0.2, 1.0))
    await r.world.restart_gateway(r.proxy)


async def gateway_paused(r: Run) -> None:
    """SIGSTOP for several seconds, then SIGCONT: clients time out and come back to it."""
    await r.streaming(30)
    proc = r.world.gateway.proc
    r.strike("gateway SIGSTOP")
    r.signal(proc, signal.SIGSTOP)
    try:
        await asyncio.sleep(r.rng.uniform(3, 5))
    finally:
        r.signal(proc, signal.SIGCONT)


async def worker_killed(r: Run) -> None:
    """SIGKILL the generation worker that owns a streaming conversation; the other takes its
    partitions over and continues the answers (a ``ResponseResumed`` in the log); a fresh worker
    joins in its place."""
    await r.streaming(30)
    cid, index = await owner_of_a_streaming_conversation(r)
    partition = r.partitions[cid]
    r.strike(f"worker-{index} SIGKILL (owner of partition {partition})")
    r.world.workers[index].kill()

    async def taken_over(logs: dict[str, LogSide]) -> str | None:
        resumed = any(took_over(logs[c]) for c in on_partition(r, partition))
        return None if resumed else f"no answer on partition {partition} was taken over after the kill"

    r.after("no_effect", taken_over)
    await r.world.restart_worker(index)
    await r.streaming(30, timeout_s=90)


async def stale_worker(r: Run) -> None:
    """The worker that owns a streaming conversation paused (SIGSTOP) until the group has handed
    its partitions over and the successor's takeover of that answer is in the log, then resumed
    with overdue tokens to write: what it still writes is fenced (the log must hold such writes),
    and no client may apply it."""
    await r.streaming(30)
    cid, index = await owner_of_a_streaming_conversation(r)
    proc = r.world.workers[index]
    takeovers = r.takeovers(cid)
    r.strike(f"worker-{index} SIGSTOP")
    r.signal(proc, signal.SIGSTOP)
    try:
        await r.world.handed_over(proc)  # its 6 s session timed out: the other worker took over
        await wait_for(lambda: r.takeovers(cid) > takeovers, timeout_s=60, interval_s=0.1)
    finally:
        r.signal(proc, signal.SIGCONT)

    async def fenced(logs: dict[str, LogSide]) -> str | None:
        written = sum(len(log.fenced | log.dropped) for log in logs.values())
        return None if written else "the resumed worker wrote nothing that was fenced"

    r.after("no_effect", fenced)
    await r.streaming(20, timeout_s=90)


async def sessions_killed(r: Run) -> None:
    """The session-state app SIGKILLed and started again; it recovers from its changelog, and its
    snapshot of every conversation, read back, equals the log's fold."""
    await r.streaming(30)
    r.strike("session app SIGKILL")
    r.world.sessions.kill()
    await asyncio.sleep(r.rng.uniform(0.5, 2))
    await r.world.restart_sessions()
    r.after("snapshot_mismatch", recovered_snapshots_equal_the_log(r))


def recovered_snapshots_equal_the_log(r: Run) -> Check:
    async def check(logs: dict[str, LogSide]) -> str | None:
        url = r.world.stack.sessions_url
        assert url is not None
        for cid, log in logs.items():
            snapshot = await snapshot_at(url, cid, log.events[-1][0])
            got = [(t["prompt_id"], t["status"], t["answer"]) for t in snapshot["turns"]]
            want = [
                (a.started.prompt_id, a.status.value, a.text)
                for a in log.answers.values()
                if a.started is not None and a.finished
            ]
            if got != want or snapshot.get("live") is not None:
                return f"{cid}: the session app's snapshot {got!r:.200} differs from the log's {want!r:.200}"
        return None

    return check


async def broker_restarted(r: Run) -> None:
    """The broker stopped under load (SIGTERM: a clean shutdown) and started again on its log,
    then killed (SIGKILL) and started again: every service reconnects, nothing acknowledged is
    lost (the log checker reads every answer back)."""
    broker = r.world.broker
    assert broker is not None, "the broker scenarios need the world's own broker"
    await r.streaming(30)
    r.strike("broker SIGTERM")
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(r.rng.uniform(1, 3))
    await asyncio.to_thread(broker.start)
    await r.streaming(30, timeout_s=120)
    r.strike("broker SIGKILL")
    await asyncio.to_thread(broker.kill)
    await asyncio.sleep(r.rng.uniform(1, 3))
    await asyncio.to_thread(broker.start)
    await r.streaming(20, timeout_s=120)


def sever(proxy: FaultProxy) -> None:
    proxy.blackhole(True)
    proxy.cut()


def mend(proxy: FaultProxy) -> None:
    proxy.heal()
    proxy.cut()


async def _cut_off(r: Run, link: ProxyThread | None, what: str) -> None:
    """Every connection through ``link`` cut, and new ones swallowed (a black hole) for a few
    seconds; then the link heals (what is left half-open is cut, so the clients reconnect at once
    rather than after their request timeout)."""
    assert link is not None, "the world's services reach the broker directly"
    await r.streaming(30)
    before = link.proxy.cuts
    r.strike(f"{what} cut off from the broker")
    link.run(sever)
    r.effect(link.proxy.cuts > before, f"cutting {what} off from the broker cut no connection")
    await asyncio.sleep(r.rng.uniform(3, 6))
    link.run(mend)
    await r.streaming(30, timeout_s=120)


async def broker_cut_from_gateway(r: Run) -> None:
    """The gateway cut off from the broker."""
    await _cut_off(r, r.world.broker_link, "the gateway")


async def broker_cut_from_services(r: Run) -> None:
    """The generation workers and session app cut off from the broker: producers retry
    (idempotent: a retried batch is never written twice), consumers stall, then carry on."""
    await _cut_off(r, r.world.services_link, "the workers and session app")


def cut(r: Run, what: str) -> None:
    """Every client connection through the proxy in front of the gateway cut, now."""
    r.strike(what)
    r.effect(r.proxy.cut() > 0, f"{what}: the proxy had no connection to cut")


async def network_faults(r: Run) -> None:
    """Between clients and gateway: cuts, a stall, a black hole, latency and a thin pipe."""
    for i in range(3):
        await r.streaming(10)
        cut(r, f"client cut {i + 1}")
    await r.streaming(10)
    r.strike("client stall")
    r.proxy.stall(True)
    await asyncio.sleep(r.rng.uniform(1, 3))
    r.proxy.stall(False)
    await r.streaming(10)
    r.strike("client black hole")
    r.proxy.blackhole(True)
    await asyncio.sleep(1)
    r.proxy.cut()  # what a client's timeout would end; the black hole swallows the reconnects too
    await asyncio.sleep(0.5)
    r.proxy.blackhole(False)
    r.proxy.cut()
    r.strike("client latency and thin pipe")
    r.proxy.delay(0.05)
    r.proxy.throttle(64_000)
    await r.streaming(10)
    r.proxy.heal()


async def storm(r: Run) -> None:
    """Every client dropped at once, three times."""
    for i in range(3):
        await r.streaming(15)
        cut(r, f"storm {i + 1}")


SCENARIOS: dict[str, Scenario] = {
    "gateway_killed": Scenario(gateway_killed, DROPPED | READS_LIMITED),
    "gateway_paused": Scenario(gateway_paused),
    "worker_killed": Scenario(worker_killed, prompts=3),
    "stale_worker": Scenario(stale_worker, prompts=3),
    "sessions_killed": Scenario(sessions_killed),
    "broker_restarted": Scenario(broker_restarted, UNAVAILABLE, prompts=4),
    "broker_cut_from_gateway": Scenario(broker_cut_from_gateway, UNAVAILABLE, prompts=3),
    "broker_cut_from_services": Scenario(broker_cut_from_services, prompts=3),
    "network_faults": Scenario(network_faults, DROPPED | SLOW),
    "storm": Scenario(storm, DROPPED),
}


def sequence(names: list[str]) -> Scenario:
    """Several faults one after another (the randomised scenario): the errors any of them
    expects, and the prompts all of them need."""

    async def run_all(r: Run) -> None:
        for name in names:
            await SCENARIOS[name].fault(r)

    parts = [SCENARIOS[name] for name in names]
    return Scenario(run_all, frozenset().union(*(p.expects for p in parts)), sum(p.prompts for p in parts))
