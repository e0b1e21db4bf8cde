"""Resume latency and idle connections of one gateway process.

    python -m bench.gateway [--resumes 200] [--missed 10 100 1000] [--connections 5000]

Writes one conversation's answer straight into ``conversation.tokens`` while two gateway
processes read it: one with the default memory window, one whose window holds 16 events (every
resume there takes the seek path). Then, for each number of missed events, clients reconnect with
the cursor that many events back and the time from opening the connection to receiving the first
missed event (and all of them) is recorded, over SSE and WebSocket. Finally N idle WebSocket
connections are opened on one gateway and its resident memory per connection is measured.

Uses ``KAFKA_BOOTSTRAP_SERVERS`` or starts a local broker of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bench import SERVICE_HEADERS
from bench.worker import RESULTS, kafka
from gateway.auth import TokenService
from gateway.wire import SSEDecoder
from infra.broker import cluster_metadata
from infra.gcpause import GcPauses
from infra.process import ManagedProcess, free_port, wait_until
from infra.services import http_ok
from infra.settings import TopicSettings
from infra.topics import ensure, topic_specs
from schemas.codec import TOKENS
from schemas.cursor import Cursor
from schemas.records import ResponseStarted, TokenDelta, now_ms
from schemas.registry import TOKENS_TOPIC


def start_gateway(
    bootstrap: str, secret: str, workdir: Path, name: str, env: dict[str, str]
) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = ManagedProcess(
        name,
        [sys.executable, "-m", "gateway"],
        workdir / f"{name}.log",
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOKENLOG_GATEWAY_PORT": str(port),
            "TOKENLOG_GATEWAY_SECRET": secret,
            "TOKENLOG_GATEWAY_SESSIONS_URL": f"http://127.0.0.1:{free_port()}",  # none, unless env says
            # Every benchmark client is the one bench user: its per-user limits are lifted.
            "TOKENLOG_GATEWAY_MAX_CONNECTIONS_PER_USER": "1000000",
            "TOKENLOG_GATEWAY_READS_PER_USER": "1000000",
            **env,
        },
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/readyz")() or not proc.running(), 60, what=f"{name} ready")
    if not proc.running():
        raise RuntimeError(f"{name} did not start: {proc.log_path.read_text()[-2000:]}")
    # Measure a warm gateway: its start-up backfill of the log's offset index has finished.
    wait_until(lambda: indexed(url), 120, what=f"{name} backfill")
    return proc, url


def indexed(url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/readyz", timeout=5).json().get("indexed"))
    except (httpx.HTTPError, ValueError):
        return False


def start_sessions(
    bootstrap: str, workdir: Path, app_id: str = "", *, faust_floor: bool = False
) -> tuple[ManagedProcess, str]:
    """The session-state app (its snapshots serve the gateway's hydrates); with ``faust_floor``,
    ``bench.faust_floor`` in its place (the same settings, an agent that applies nothing)."""
    app_id = app_id or f"bench-sessions-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = "faust-floor" if faust_floor else "sessions"
    module = ["bench.faust_floor"] if faust_floor else ["pipeline", "sessions"]
    proc = ManagedProcess(
        name,
        [sys.executable, "-m", *module],
        workdir / f"{name}.log",
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOKENLOG_SESSIONS_APP_ID": app_id,
            "TOKENLOG_SESSIONS_PORT": str(port),
            "TOKENLOG_SESSIONS_DATA_DIR": str(workdir / "sessions-data"),
        },
    )
    proc.start()
    wait_until(
        lambda: http_ok(f"{url}/readyz", SERVICE_HEADERS)() or not proc.running(), 120, what="sessions ready"
    )
    if not proc.running():
        raise RuntimeError(f"{name} did not start: {proc.log_path.read_text()[-2000:]}")
    return proc, url


async def write_answer(bootstrap: str, cid: str, deltas: int) -> tuple[int, list[int]]:
    """One answer (a start and ``deltas`` deltas); its partition and the offsets of its events."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        rid = f"r-{uuid.uuid4().hex}"
        events: list[Any] = [ResponseStarted(cid, rid, "p-1", "bench", "question", "m", now_ms())]
        events += [TokenDelta(cid, rid, i, f" w{i}", now_ms()) for i in range(deltas)]
        futures = [await producer.send(TOKENS_TOPIC, TOKENS.encode(e), key=cid.encode()) for e in events]
        written = [await f for f in futures]
        return int(written[0].partition), [int(m.offset) for m in written]
    finally:
        await producer.stop()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": len(ordered),
        "p50_ms": round(at(0.50), 3),
        "p90_ms": round(at(0.90), 3),
        "p99_ms": round(at(0.99), 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


async def resume_sse(
    http: httpx.AsyncClient, url: str, cid: str, *, token: str, cursor: str, missed: int
) -> tuple[float, float]:
    began = time.perf_counter()
    first = 0.0
    got = 0
    decoder = SSEDecoder()
    async with http.stream(
        "GET",
        f"{url}/v1/conversations/{cid}/events",
        params={"access_token": token},
        headers={"Last-Event-ID": cursor},
    ) as response:
        assert response.status_code == 200, response.status_code
        async for chunk in response.aiter_raw():
            for kind, _, _ in decoder.feed(chunk):
                if kind in {"token", "response.started"}:
                    got += 1
                    if got == 1:
                        first = time.perf_counter() - began
                    if got == missed:
                        return first, time.perf_counter() - began
    raise AssertionError(f"stream ended after {got} of {missed} events")


async def resume_ws(url: str, cid: str, token: str, cursor: str, missed: int) -> tuple[float, float]:
    began = time.perf_counter()
    first = 0.0
    got = 0
    ws_url = url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={token}"
    async with websockets.connect(ws_url, compression=None) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "cursor": cursor}).decode())
        async for message in ws:
            if orjson.loads(message)["type"] in ("token", "response.started"):
                got += 1
                if got == 1:
                    first = time.perf_counter() - began
                if got == missed:
                    return first, time.perf_counter() - began
    raise AssertionError(f"socket closed after {got} of {missed} events")


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` in a Prometheus text exposition."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def bucket_quantiles(
    before: str, after: str, name: str, quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)
) -> dict[str, float]:
    """Quantiles (ms) of what the histogram ``name`` (in seconds) observed between two scrapes,
    interpolated within a bucket as Prometheus' ``histogram_quantile`` does; ``n``: observations."""

    def buckets(text: str) -> dict[float, float]:
        return {float(labels["le"]): value for labels, value in metric_samples(text, f"{name}_bucket")}

    start, end = buckets(before), buckets(after)
    bounds = sorted(end)
    counts = [end[b] - start.get(b, 0.0) for b in bounds]  # cumulative, as exposed
    total = counts[-1] if counts else 0.0
    out: dict[str, float] = {"n": int(total)}
    for q in quantiles if total else ():
        rank = q * total
        i = next(i for i, count in enumerate(counts) if count >= rank)
        low, below = (bounds[i - 1], counts[i - 1]) if i else (0.0, 0.0)
        high = bounds[i]
        value = low if math.isinf(high) else low + (high - low) * (rank - below) / (counts[i] - below)
        out[f"p{q * 100:g}"] = round(value * 1000, 3)
    return out


async def scrape(url: str, http: httpx.AsyncClient | None = None) -> str:
    """The gateway's /metrics text (through ``http`` when given)."""
    if http is not None:
        return (await http.get(f"{url}/metrics")).text
    async with httpx.AsyncClient(timeout=10) as own:
        return (await own.get(f"{url}/metrics")).text


async def resumes_by_path(url: str) -> dict[str, float]:
    """The gateway's resumes so far, by the path that served them (its /metrics)."""
    samples = metric_samples(await scrape(url), "tokenlog_gateway_resumes_total")
    return {labels["path"]: value for labels, value in samples}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def idle_connections(url: str, pid: int, token: str, count: int) -> dict[str, Any]:
    """Open ``count`` idle WebSocket streams (each following its own conversation) on one gateway."""
    before = rss_kib(pid)
    sockets = []
    base = url.replace("http://", "ws://")
    began = time.perf_counter()
    try:
        series = [(0, before)]
        for i in range(count):
            if i and i % max(1, count // 10) == 0:
                series.append((i, rss_kib(pid)))
            ws = await websockets.connect(
                f"{base}/v1/conversations/idle-{i}/ws?access_token={token}", compression=None, open_timeout=30
            )
            await ws.send('{"type":"subscribe","cursor":"now"}')
            sockets.append(ws)
        for ws in sockets:  # every one subscribed and live
            assert orjson.loads(await ws.recv())["type"] == "subscribed"
        opened = time.perf_counter() - began
        await asyncio.sleep(1.0)
        after = rss_kib(pid)
        held = next(
            value
            for labels, value in metric_samples(await scrape(url), "tokenlog_gateway_connections")
            if labels.get("transport") == "ws"
        )
    finally:
        for ws in sockets:
            await ws.close()
    return {
        "connections": count,
        "held_by_gateway": held,
        "open_s": round(opened, 2),
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "kib_per_connection": round((after - before) / count, 1),
        "series": [*series, (count, after)],
    }


async def gc_pauses_over(url: str, seconds: float) -> float:
    """Garbage collections of the gateway at ``url`` so far that took longer than ``seconds`` (a
    bucket bound of ``tokenlog_gateway_gc_pause_seconds``), all generations."""
    total = 0.0
    for labels, count in metric_samples(await scrape(url), "tokenlog_gateway_gc_pause_seconds_bucket"):
        le = float(labels["le"])
        if le == float("inf"):
            total += count
        elif le == seconds:
            total -= count
    return total


def resumes_at(resumes: int, missed: int) -> int:
    """Resumes measured at a point: ``resumes`` up to 1,000 missed events (the targets' points; a
    p99 needs about a thousand samples, of a hundred it is the largest), a tenth of that beyond
    (each of those reads 10,000 events), at least 10."""
    return resumes if missed <= 1000 else max(10, resumes // 10)


async def holds_the_end(url: str, cid: str, token: str, cursor: str, timeout_s: float = 60) -> None:
    """Until the gateway at ``url`` serves the answer's last event from memory (a resume from the
    event before it takes the memory path): its tail reader has taken in everything written, and
    no longer competes with the resumes for the CPU."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        before = (await resumes_by_path(url)).get("memory", 0.0)
        await resume_ws(url, cid, token, cursor, 1)
        if (await resumes_by_path(url)).get("memory", 0.0) > before:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not take in the answer's last event within {timeout_s}s")


WARMUP_RESUMES = 10
"""Resumes per transport and gateway before the measured ones."""
GC_PAUSE_NOTED_S = 0.005
"""Gateway collections longer than this are counted per resume point."""


async def measure(
    bootstrap: str, workdir: Path, *, resumes: int, missed: list[int], connections: int
) -> dict[str, Any]:
    await ensure(bootstrap, topic_specs(TopicSettings()))
    secret = secrets.token_urlsafe(48)
    token = TokenService(secret, 3600).issue("bench")
    gw_mem, mem_url = start_gateway(bootstrap, secret, workdir, "gateway-memory", {})
    gw_seek, seek_url = start_gateway(
        bootstrap, secret, workdir, "gateway-seek", {"TOKENLOG_GATEWAY_WINDOW_EVENTS": "16"}
    )
    client_pauses: list[float] = []
    recorder = GcPauses(lambda _generation, seconds: client_pauses.append(seconds))
    try:
        cid = f"bench-{uuid.uuid4().hex[:12]}"
        total = max(missed) + 10
        part, offsets = await write_answer(bootstrap, cid, total)
        epoch = str((await cluster_metadata(bootstrap, timeout_s=30))["cluster_id"])
        figures: dict[str, Any] = {"resumes_per_point": resumes, "points": []}
        # Both gateways read the answer just written through their tail readers: the first
        # point's resumes competed with that for the CPU (a 30 ms p99 against 5 ms in the others).
        last = Cursor(epoch, int(part), offsets[-2]).format()
        for url in (mem_url, seek_url):
            await holds_the_end(url, cid, token, last)
        # The measuring process's own collector must not pause a resume it times: what it holds
        # now is frozen out of its collections, and the pauses left are recorded per point.
        gc.collect()
        gc.freeze()
        recorder.install()
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for path, url in (("memory", mem_url), ("seek", seek_url)):
                # Warm-up, not measured: a fresh process's first streams pay for lazy set-up
                # (one 30-80 ms outlier in the first point's 100 resumes made its p99).
                cursor = Cursor(epoch, int(part), offsets[len(offsets) - 1 - missed[0]]).format()
                for _ in range(WARMUP_RESUMES):
                    await resume_sse(http, url, cid, token=token, cursor=cursor, missed=missed[0])
                    await resume_ws(url, cid, token, cursor, missed[0])
                for n in missed:
                    cursor = Cursor(epoch, int(part), offsets[len(offsets) - 1 - n]).format()
                    for transport in ("sse", "ws"):
                        firsts, alls = [], []
                        client_before = len(client_pauses)
                        gateway_before = await gc_pauses_over(url, GC_PAUSE_NOTED_S)
                        for _ in range(resumes_at(resumes, n)):
                            if transport == "sse":
                                first, done = await resume_sse(
                                    http, url, cid, token=token, cursor=cursor, missed=n
                                )
                            else:
                                first, done = await resume_ws(url, cid, token, cursor, n)
                            firsts.append(first)
                            alls.append(done)
                        first_p, all_p = percentiles(firsts), percentiles(alls)
                        figures["points"].append(
                            {
                                "path": path,
                                "transport": transport,
                                "missed": n,
                                "first_event": first_p,
                                "all_events": all_p,
                                "client_gc_max_ms": round(
                                    max(client_pauses[client_before:], default=0) * 1e3, 3
                                ),
                                "gateway_gc_over_5ms": await gc_pauses_over(url, GC_PAUSE_NOTED_S)
                                - gateway_before,
                            }
                        )
                        print(
                            f"  {path:6} {transport:3} missed {n:5}: first p50 {first_p['p50_ms']:7.2f} ms"
                            f" p99 {first_p['p99_ms']:7.2f} ms; all events p50 {all_p['p50_ms']:7.2f} ms"
                            f" p99 {all_p['p99_ms']:7.2f} ms",
                            flush=True,
                        )
        figures["paths_served"] = {
            name: await resumes_by_path(url) for name, url in (("memory", mem_url), ("seek", seek_url))
        }
        if connections:
            gw_seek.stop()
            figures["idle"] = await idle_connections(mem_url, gw_mem.pid or 0, token, connections)
            print(f"  idle websocket connections: {figures['idle']}", flush=True)
        return figures
    finally:
        recorder.uninstall()
        gc.unfreeze()
        gw_mem.stop()
        gw_seek.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway")
    parser.add_argument("--resumes", type=int, default=200)
    parser.add_argument("--missed", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--connections", type=int, default=5000)
    args = parser.parse_args()
    with kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        print("gateway resume latency (connect → first missed event, → all missed events)", flush=True)
        figures = asyncio.run(
            measure(
                bootstrap, Path(tmp), resumes=args.resumes, missed=args.missed, connections=args.connections
            )
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
