"""The benchmark suite of issue 9: the whole system under load, each figure against the floor
measured in the same run, results as JSON, a Markdown summary and PNG plots in ``bench/results/``.

    python -m bench.suite            # make bench (several minutes)
    python -m bench.suite --quick    # make bench-quick (about a minute; CI runs it)

Uses ``KAFKA_BOOTSTRAP_SERVERS`` or starts a local broker of its own (temporary, free ports).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway import idle_connections, start_gateway, start_sessions
from bench.gateway import measure as resume_measure
from bench.load import Point, cpu_seconds, run_point
from bench.report import write_report
from bench.sessions import lag
from bench.storm import storm
from bench.traffic import measure as traffic_measure
from bench.worker import RESULTS, kafka
from gateway.auth import TokenService
from infra.broker import cluster_metadata
from infra.process import wait_until
from infra.settings import TopicSettings
from infra.topics import ensure, topic_specs
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC

FULL = {
    "budget": (200, 50.0),
    "floor_ceiling": [(200, 100.0)],
    "loads": [10, 100, 200, 500],
    "rate": 50.0,
    "seconds": 10.0,
    "ceiling": [(200, 50.0, 1), (200, 100.0, 1), (200, 200.0, 1), (200, 50.0, 10), (200, 100.0, 10)],
    "missed": [10, 100, 1000, 10000],
    "resumes": 1000,
    "idle": 10000,
    "fanout": {"rate": 100.0, "devices": 300},
    "storm": {"clients": 1000, "conversations": 100},
    "traffic": {
        "missed": 1000,
        "others": [0, 10_000, 100_000, 1_000_000],
        "small_batches": [10_000, 100_000],
        "resumes": 20,
    },
}
QUICK = {
    "budget": (50, 50.0),
    "floor_ceiling": [(50, 100.0)],
    "loads": [10, 50],
    "rate": 50.0,
    "seconds": 3.0,
    "ceiling": [(50, 100.0, 1), (50, 50.0, 10)],
    "missed": [10, 100],
    "resumes": 10,
    "idle": 300,
    "fanout": {"rate": 50.0, "devices": 50},
    "storm": {"clients": 100, "conversations": 20},
    "traffic": {"missed": 100, "others": [0, 10_000], "small_batches": [10_000], "resumes": 5},
}


def broker_pid(bootstrap: str) -> int:
    """The JVM of the broker this run started (its home is a ``tokenlog-bench-`` directory); 0 for
    an external cluster, whose CPU is then not counted."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"kafka.Kafka" in cmdline and b"tokenlog-bench-" in cmdline:
                return int(proc.name)
    return 0


def sustained(point: dict[str, Any]) -> bool:
    """Every token delivered exactly once and the p99 under a second."""
    problems = point["problems"]
    clean = not problems["lost"] and not problems["duplicated"] and not problems["unfinished"]
    complete = point["delivered"] == point["sent"] * point["devices"]
    return clean and complete and point["latency_ms"]["all"].get("p99", 1e9) < 1000


def floor_sustained(point: dict[str, Any]) -> bool:
    """Kafka alone kept up: the floor consumer got every record and its p99 is under a second."""
    received: int = point["floor_received"]
    p99: float = point["floor_ms"].get("p99", 1e9)
    return received >= point["sent"] and p99 < 1000


def run(bootstrap: str, workdir: Path, plan: dict[str, Any]) -> dict[str, Any]:
    asyncio.run(ensure(bootstrap, topic_specs(TopicSettings())))
    secret = secrets.token_urlsafe(48)
    token = TokenService(secret, 3600).issue("bench")
    results: dict[str, Any] = {"plan": plan, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results["budget"] = budget(bootstrap, secret, token, workdir, plan)
    app_id = f"bench-sessions-{secrets.token_hex(4)}"
    sessions, sessions_url = start_sessions(bootstrap, workdir, app_id)

    def settle() -> float:
        """Wait until the session app has caught up (a point's backlog is not the next point's
        load); the seconds it took."""
        began = time.monotonic()
        try:
            wait_until(lambda: asyncio.run(lag(bootstrap, app_id)) == 0, 300, interval_s=0.5, what="sessions")
        except TimeoutError:
            return -1.0  # still behind: the point runs anyway (recorded as -1)
        return round(time.monotonic() - began, 1)

    with_sessions = {"TOKENLOG_GATEWAY_SESSIONS_URL": sessions_url}
    try:
        gateway, url = start_gateway(bootstrap, secret, workdir, "gateway-load", with_sessions)
        pids = {"gateway": gateway.pid or 0, "broker": broker_pid(bootstrap), "sessions": sessions.pid or 0}
        try:
            results["latency"] = []
            for answers in plan["loads"]:
                waited = settle()
                point = run_point(bootstrap, url, token, Point(answers, plan["rate"], plan["seconds"]), pids)
                point["sessions_catch_up_s"] = waited
                results["latency"].append(point)
                print(line("latency", point), flush=True)
            fan = plan["fanout"]
            point = run_point(
                bootstrap, url, token, Point(1, fan["rate"], plan["seconds"], devices=fan["devices"]), pids
            )
            results["fanout"] = {**point, "frames_per_core_s": point["frames_per_gateway_core_s"]}
            print(
                line("fan-out", point),
                f"{point['frames_per_gateway_core_s']:,} frames per gateway core-second",
            )
            results["storm"] = asyncio.run(storm(bootstrap, url, token, **plan["storm"]))
            print(f"reconnect storm: {results['storm']}", flush=True)
            results["throughput"] = []
            for answers, rate, per_delta in plan["ceiling"]:
                settle()
                point = run_point(
                    bootstrap, url, token, Point(answers, rate, plan["seconds"], per_delta), pids
                )
                point["sustained"] = sustained(point)
                results["throughput"].append(point)
                print(line("throughput", point), flush=True)
        finally:
            gateway.stop()
        # The throughput points leave the session app behind by up to a million events: it would
        # catch up during the resume timings, on the same two cores.
        results["resume_sessions_catch_up_s"] = settle()
        print("resume latency by path (connect → first missed event)", flush=True)
        results["resume"] = asyncio.run(
            resume_measure(bootstrap, workdir, resumes=plan["resumes"], missed=plan["missed"], connections=0)
        )
        seek_env = {**with_sessions, "TOKENLOG_GATEWAY_WINDOW_EVENTS": "16"}
        gateway, url = start_gateway(bootstrap, secret, workdir, "gateway-seek", seek_env)
        try:
            print("resume through the seek path against unrelated traffic in the partition", flush=True)
            epoch = str(asyncio.run(cluster_metadata(bootstrap, timeout_s=30))["cluster_id"])
            results["traffic"] = asyncio.run(traffic_measure(bootstrap, url, token, epoch, **plan["traffic"]))
        finally:
            gateway.stop()
        gateway, url = start_gateway(bootstrap, secret, workdir, "gateway-idle", with_sessions)
        try:
            results["idle"] = asyncio.run(idle_connections(url, gateway.pid or 0, token, plan["idle"]))
            print(f"idle websocket connections: {results['idle']}", flush=True)
        finally:
            gateway.stop()
    finally:
        sessions.stop()
    return results


def budget(bootstrap: str, secret: str, token: str, workdir: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """The e2e target's load with fewer processes on the machine: the floor alone (broker,
    producer, floor consumer), then the gateway and its clients without the session app; the
    full system's point follows in ``latency``. Shows what each part's CPU costs the latency."""
    answers, rate = plan["budget"]
    broker = {"broker": broker_pid(bootstrap)}
    out: dict[str, Any] = {
        "floor_alone": run_point(
            bootstrap, "", token, Point(answers, rate, plan["seconds"], clients=False), broker
        )
    }
    print(line("floor only", out["floor_alone"]), flush=True)
    # The per-token throughput target's load on Kafka alone: what is left for everything else.
    out["floor_ceiling"] = []
    for answers_at, rate_at in plan.get("floor_ceiling", []):
        point = run_point(
            bootstrap, "", token, Point(answers_at, rate_at, plan["seconds"], clients=False), broker
        )
        point["sustained"] = floor_sustained(point)
        out["floor_ceiling"].append(point)
        print(line("floor only", point), f"sustained: {point['sustained']}", flush=True)
    # Without a session app the gateway hydrates each new conversation by scanning its partition:
    # 200 scans of the Kafka-only points' records, queued on four catch-up consumers before the
    # point starts, took over the 10 s default for the last of them (a 503 at subscribe).
    alone_env = {"TOKENLOG_GATEWAY_CATCHUP_TIMEOUT_S": "60"}
    gateway, url = start_gateway(bootstrap, secret, workdir, "gateway-alone", alone_env)
    try:
        pids = {**broker, "gateway": gateway.pid or 0}
        out["no_sessions"] = run_point(bootstrap, url, token, Point(answers, rate, plan["seconds"]), pids)
        print(line("no session", out["no_sessions"]), flush=True)
    finally:
        gateway.stop()
    kafka_only = Point(answers, rate, plan["seconds"], clients=False)
    out["sessions_alone"] = apply_cost(bootstrap, token, workdir, kafka_only, faust_floor=False)
    out["faust_alone"] = apply_cost(bootstrap, token, workdir, kafka_only, faust_floor=True)
    for name in ("sessions_alone", "faust_alone"):
        print(f"{name:14} {out[name]['us_per_event']} us per event", flush=True)
    return out


def apply_cost(
    bootstrap: str, token: str, workdir: Path, point: Point, *, faust_floor: bool
) -> dict[str, Any]:
    """The session app (or, with ``faust_floor``, Faust alone: ``bench.faust_floor``) with Kafka
    only at ``point``'s load: its CPU per event, from when it has caught up on the log before the
    point until it has applied everything the point wrote (a share of a busy machine may leave it
    behind while the load runs)."""
    name = "faust" if faust_floor else "sessions"
    app_id = f"bench-{name}-alone-{secrets.token_hex(4)}"
    home = workdir / app_id
    home.mkdir()
    topics = (TOKENS_TOPIC,) if faust_floor else (PROMPTS_TOPIC, TOKENS_TOPIC)

    def caught_up() -> bool:
        return asyncio.run(lag(bootstrap, app_id, topics)) == 0

    proc, _ = start_sessions(bootstrap, home, app_id, faust_floor=faust_floor)
    try:
        pid = proc.pid or 0
        wait_until(caught_up, 300, interval_s=0.5, what=f"{name} caught up")
        cpu0 = cpu_seconds(pid)
        measured = run_point(bootstrap, "", token, point, {"broker": broker_pid(bootstrap), name: pid})
        ended = time.monotonic()
        wait_until(caught_up, 300, interval_s=0.2, what=f"{name} caught up")
        behind_s = time.monotonic() - ended
        cpu = cpu_seconds(pid) - cpu0
    finally:
        proc.stop()
    events = measured["sent"] + 2 * point.answers  # the deltas, and each answer's start and end
    return {
        "events": events,
        "cpu_s": round(cpu, 2),
        "us_per_event": round(cpu / events * 1e6, 1),
        "cores_while_loaded": measured["cpu_utilisation"].get(name, 0.0),
        "caught_up_after_s": round(behind_s, 1),
        "point": measured,
    }


def line(kind: str, p: dict[str, Any]) -> str:
    lat, floor, added = p["latency_ms"]["all"], p["floor_ms"], p["gateway_added_ms"]
    return (
        f"{kind:10} {p['answers']:4} answers x {p['rate_per_answer']:.0f}/s x {p['tokens_per_delta']} tok "
        f"= {p['offered_tokens_per_s']:>8,.0f} tok/s: delivered {p['delivered']:,}/{p['sent']:,} "
        f"p50 {lat.get('p50', 0):.2f} p99 {lat.get('p99', 0):.2f} p99.9 {lat.get('p99.9', 0):.2f} ms "
        f"(floor p50 {floor.get('p50', 0):.2f} p99 {floor.get('p99', 0):.2f}; "
        f"added p50 {added.get('p50', 0):.2f} p99 {added.get('p99', 0):.2f}) "
        f"cpu {p['cpu_us_per_token']} us/token"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    with kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        results = run(bootstrap, Path(tmp), plan)
    out = RESULTS / ("quick" if args.quick else "latest")
    summary = write_report(results, out)
    print(summary)
    print(f"written to {out}/")


if __name__ == "__main__":
    main()
