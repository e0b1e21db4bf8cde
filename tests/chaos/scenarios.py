"""The faults, each an async function of a ``Run`` that starts once the prompts are accepted and
returns when its fault is over (the followers then finish reading and the checker judges)."""

from __future__ import annotations

import asyncio
import signal

from tests.chaos.proxy import FaultProxy, ProxyThread
from tests.chaos.world import Fault, Run


async def gateway_killed(r: Run) -> None:
    """SIGKILL mid-answer; a new gateway process comes up (the proxy points at it)."""
    await r.streaming(30)
    r.world.gateway.proc.kill()
    await asyncio.sleep(r.rng.uniform(0.2, 1.0))
    await r.world.restart_gateway(r.proxy)


async def gateway_paused(r: Run) -> None:
    """SIGSTOP for several seconds, then SIGCONT: clients time out and come back to it."""
    await r.streaming(30)
    proc = r.world.gateway.proc
    r.signal(proc, signal.SIGSTOP)
    try:
        await asyncio.sleep(r.rng.uniform(3, 5))
    finally:
        r.signal(proc, signal.SIGCONT)


async def worker_killed(r: Run) -> None:
    """SIGKILL a generation worker mid-answer; the other takes its partitions over and continues
    the answers; a fresh worker joins in its place."""
    await r.streaming(30)
    index = r.rng.randrange(len(r.world.workers))
    r.world.workers[index].kill()
    await r.world.restart_worker(index)
    await r.streaming(30, timeout_s=90)


async def stale_worker(r: Run) -> None:
    """A worker paused (SIGSTOP) long enough for the group to hand its partitions over, then
    resumed: whatever it still writes is fenced, and no client may apply it."""
    await r.streaming(30)
    proc = r.world.workers[r.rng.randrange(len(r.world.workers))]
    r.signal(proc, signal.SIGSTOP)
    try:
        await r.world.handed_over(proc)  # its 6 s session timed out: the other worker took over
    finally:
        r.signal(proc, signal.SIGCONT)
    await r.streaming(20, timeout_s=90)


async def sessions_killed(r: Run) -> None:
    """The session-state app SIGKILLed and started again; it recovers from its changelog."""
    await r.streaming(30)
    r.world.sessions.kill()
    await asyncio.sleep(r.rng.uniform(0.5, 2))
    await r.world.restart_sessions()


async def broker_restarted(r: Run) -> None:
    """The broker stopped under load (SIGTERM: a clean shutdown) and started again on its log,
    then killed (SIGKILL) and started again: every service reconnects, nothing acknowledged is
    lost."""
    broker = r.world.broker
    assert broker is not None, "the broker scenarios need the world's own broker"
    await r.streaming(30)
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(r.rng.uniform(1, 3))
    await asyncio.to_thread(broker.start)
    await r.streaming(30, timeout_s=120)
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


async def _cut_off(r: Run, link: ProxyThread | None) -> None:
    """Every connection through ``link`` cut, and new ones swallowed (a black hole) for a few
    seconds; then the link heals (what is left half-open is cut, so the clients reconnect at once
    rather than after their request timeout)."""
    assert link is not None, "the world's services reach the broker directly"
    await r.streaming(30)
    link.run(sever)
    await asyncio.sleep(r.rng.uniform(3, 6))
    link.run(mend)
    await r.streaming(30, timeout_s=120)


async def broker_cut_from_gateway(r: Run) -> None:
    """The gateway cut off from the broker."""
    await _cut_off(r, r.world.broker_link)


async def broker_cut_from_services(r: Run) -> None:
    """The generation workers and session app cut off from the broker: producers retry
    (idempotent: a retried batch is never written twice), consumers stall, then carry on."""
    await _cut_off(r, r.world.services_link)


async def network_faults(r: Run) -> None:
    """Between clients and gateway: cuts, a stall, a black hole, latency and a thin pipe."""
    for _ in range(3):
        await r.streaming(10)
        r.proxy.cut()
    await r.streaming(10)
    r.proxy.stall(True)
    await asyncio.sleep(r.rng.uniform(1, 3))
    r.proxy.stall(False)
    await r.streaming(10)
    r.proxy.blackhole(True)
    await asyncio.sleep(1)
    r.proxy.cut()  # what a client's timeout would end; the black hole swallows the reconnects too
    await asyncio.sleep(0.5)
    r.proxy.blackhole(False)
    r.proxy.cut()
    r.proxy.delay(0.05)
    r.proxy.throttle(64_000)
    await r.streaming(10)
    r.proxy.heal()


async def storm(r: Run) -> None:
    """Every client dropped at once, three times."""
    for _ in range(3):
        await r.streaming(15)
        r.proxy.cut()


SCENARIOS: dict[str, Fault] = {
    "gateway_killed": gateway_killed,
    "gateway_paused": gateway_paused,
    "worker_killed": worker_killed,
    "stale_worker": stale_worker,
    "sessions_killed": sessions_killed,
    "broker_restarted": broker_restarted,
    "broker_cut_from_gateway": broker_cut_from_gateway,
    "broker_cut_from_services": broker_cut_from_services,
    "network_faults": network_faults,
    "storm": storm,
}


def sequence(names: list[str]) -> Fault:
    """Several faults one after another (the randomised scenario)."""

    async def run_all(r: Run) -> None:
        for name in names:
            await SCENARIOS[name](r)

    return run_all
