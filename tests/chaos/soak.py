"""Soak: steady load with random disconnects for N minutes; memory and file descriptors of every
process sampled; a leak, or any violation the checker finds, fails it.

``make soak MINUTES=30`` (``python -m tests.chaos.soak --minutes 30 --out DIR``) starts its own
broker and the chaos world (two workers, the session app, a gateway behind the fault proxy), and
runs rounds of conversations (prompts through the gateway, followers over SSE and WebSocket
reading short stretches and reconnecting) back to back until the time is up. Every round is judged
by the checker. Samples go to ``soak.json`` and ``soak.png``.

Leak rule (Python processes; the broker's JVM heap is reported, not judged): over the last two
thirds of the run (the gateway's window cache is given a budget it fills in the first third),
memory may not keep rising — the median of the last third against the median of
the middle third may grow by at most 16 MiB and 10 %, and open descriptors by at most 10.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.settings import TopicSettings
from infra.topics import ensure, topic_specs
from tests.chaos.checker import Tally
from tests.chaos.scenarios import DROPPED, cut
from tests.chaos.world import Plan, Run, Scenario, World, run
from tests.harness import kafka_for_tests

SAMPLE_S = 2.0
SOAK_ENV = {
    "TOKENLOG_GATEWAY_WINDOW_TOTAL_EVENTS": os.environ.get("TOKENLOG_GATEWAY_WINDOW_TOTAL_EVENTS", "20000")
}
"""The gateway's memory window is a cache bounded by events (about 1.4 KiB each): with a budget the
run fills within its first third, memory that still rises afterwards is a leak, not the cache."""


@dataclass
class Series:
    times: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


def sample(pid: int) -> tuple[float, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss / 1024, fds


def leaks(series: Series) -> list[str]:
    """What rose in the last third against the middle third (empty: no leak)."""
    n = len(series.times)
    if n < 6:
        return [f"only {n} samples"]
    middle, last = slice(n // 3, 2 * n // 3), slice(2 * n // 3, n)
    found = []
    mem_mid, mem_last = statistics.median(series.rss_mib[middle]), statistics.median(series.rss_mib[last])
    if mem_last - mem_mid > max(16.0, 0.10 * mem_mid):
        found.append(f"memory {mem_mid:.1f} -> {mem_last:.1f} MiB")
    fd_mid, fd_last = max(series.fds[middle]), max(series.fds[last])
    if fd_last - fd_mid > 10:
        found.append(f"descriptors {fd_mid} -> {fd_last}")
    return found


def pids(world: World) -> dict[str, int]:
    procs = {"gateway": world.gateway.proc, "sessions": world.sessions}
    procs.update({f"worker-{i}": w for i, w in enumerate(world.workers)})
    return {name: p.pid for name, p in procs.items() if p.pid is not None}


async def steady(r: Run) -> None:
    """The soak's only fault: a few cuts between clients and gateway while answers stream."""
    for i in range(2):
        await r.streaming(20)
        cut(r, f"soak cut {i + 1}")


async def soak(world: World, minutes: float, broker_pid: int | None, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    series: dict[str, Series] = {}
    began = time.monotonic()
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            now = time.monotonic() - began
            watched = pids(world) | ({"broker": broker_pid} if broker_pid else {})
            for name, pid in watched.items():
                got = sample(pid)
                if got is not None:
                    s = series.setdefault(name, Series())
                    s.times.append(round(now, 1))
                    s.rss_mib.append(round(got[0], 1))
                    s.fds.append(got[1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)

    tally, rounds, reconnects = Tally(), 0, 0
    task = asyncio.create_task(sampler())
    try:
        plan = Plan(conversations=4, followers=4, prompts=2, tokens=80, rate=40.0)
        while time.monotonic() - began < minutes * 60:
            result = await run(world, "soak", Scenario(steady, DROPPED), plan, rng.randrange(2**32))
            tally.merge(result.tally)
            rounds += 1
            reconnects += result.reconnects
            print(f"soak round {rounds} at {time.monotonic() - began:.0f} s: {result.row()}", flush=True)
    finally:
        stop.set()
        await task
    verdicts = {name: leaks(s) for name, s in series.items() if name != "broker"}
    return {
        "minutes": minutes,
        "seed": seed,
        "rounds": rounds,
        "reconnects": reconnects,
        "checked": tally.row(),
        "violations": tally.details,
        "leaks": {k: v for k, v in verdicts.items() if v},
        "series": {k: vars(v) for k, v in series.items()},
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, fds) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, s in sorted(report["series"].items()):
        minutes = [t / 60 for t in s["times"]]
        mem.plot(minutes, s["rss_mib"], label=name)
        fds.plot(minutes, s["fds"], label=name)
    mem.set_ylabel("RSS (MiB)")
    mem.set_title(
        f"soak: {report['minutes']:g} min, {report['rounds']} rounds, {report['reconnects']:,} reconnects"
    )
    fds.set_ylabel("open file descriptors")
    fds.set_xlabel("minutes")
    for ax in (mem, fds):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak"))
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"soak for {args.minutes:g} minutes, seed {seed}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tokenlog-soak-") as tmp_dir:
        tmp = Path(tmp_dir)
        with kafka_for_tests(tmp / "broker") as kafka:
            asyncio.run(ensure(kafka.bootstrap, topic_specs(TopicSettings())))
            world = World.start(kafka.bootstrap, tmp, env=SOAK_ENV)
            try:
                broker_pid = kafka.broker.pid() if kafka.broker is not None else None
                report = asyncio.run(soak(world, args.minutes, broker_pid, seed))
            finally:
                world.stop()
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "soak.png")
    failed = bool(report["leaks"]) or bool(report["violations"])
    print(json.dumps({k: report[k] for k in ("rounds", "reconnects", "checked", "leaks")}, indent=1))
    print(f"soak {'FAILED' if failed else 'passed'}; {args.out / 'soak.png'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
