"""End-to-end token latency and throughput under open-loop load, against the Kafka floor.

One load point: ``answers`` conversations, each with one answer whose deltas are produced at a
fixed schedule (``rate`` deltas/s each, staggered), for ``seconds`` after a warm-up. Three
processes take part besides the broker and the gateway:

- the **producer** plays the generation worker's part: the worker's producer settings
  (idempotent, ``acks=all``, no linger), each event sealed into its answer's hash chain as the
  worker does; every delta carries its *scheduled* send time (ns) in its text and in a header.
  Latency is measured from the schedule, so a producer that falls behind is counted, not hidden
  (open loop, no coordinated omission);
- the **clients** follow every conversation through the gateway, half over WebSocket, half over
  SSE, and record receive time minus scheduled time for each delta; they check each answer's seq
  (nothing lost, nothing doubled);
- the **floor**: a raw aiokafka consumer (no group, every partition assigned) reading the same
  records from the same broker at the same time, recording the same difference from the header.

Gateway-added latency = system percentile minus floor percentile, per percentile. CPU seconds of
every process (broker, gateway, producer, clients, floor) are read from ``/proc`` around the
measured window, for CPU per token; so is the time each spent runnable but waiting for a CPU (the
scheduler's run queue), which is what a busy machine adds to every hop between processes.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


@dataclass(frozen=True)
class Point:
    """One load point."""

    answers: int
    rate: float
    """Deltas per second per answer."""
    seconds: float
    tokens_per_delta: int = 1
    """1: every model token is its own event; more: deltas coalesced (the worker's window)."""
    warmup_s: float = 2.0
    devices: int = 1
    """Clients following each answer (fan-out: many devices on one conversation)."""
    clients: bool = True
    """False: no clients, only the producer and the floor consumer (what the broker alone allows)."""

    @property
    def tokens_per_s(self) -> float:
        return self.answers * self.rate * self.tokens_per_delta


def histogram(samples_ns: np.ndarray) -> dict[str, float]:
    """Percentiles (ms) of latency samples in ns."""
    if samples_ns.size == 0:
        return {"n": 0}
    ms = samples_ns / 1e6
    out: dict[str, float] = {"n": int(ms.size)}
    for name, q in PERCENTILES.items():
        out[name] = round(float(np.percentile(ms, q)), 3)
    out["max"] = round(float(ms.max()), 3)
    out["mean"] = round(float(ms.mean()), 3)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_queue(pid: int) -> tuple[int, int]:
    """Over every thread of a process, from ``/proc/<pid>/task/*/schedstat``: nanoseconds spent
    runnable but waiting for a CPU, and how many times a thread was put on one."""
    wait = runs = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            _, waited, ran = (task / "schedstat").read_text().split()
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
        wait += int(waited)
        runs += int(ran)
    return wait, runs


def cpu_wait(before: tuple[int, int], after: tuple[int, int], seconds: float) -> dict[str, float]:
    """Run-queue figures of one process over a window: ms waited per second, and the mean wait
    each time it was given a CPU (ms): how long a wake-up (a record, a frame) waits to be handled."""
    waited, runs = max(0, after[0] - before[0]), max(0, after[1] - before[1])
    return {
        "wait_ms_per_s": round(waited / 1e6 / seconds, 1),
        "mean_wait_ms": round(waited / runs / 1e6, 3) if runs else 0.0,
    }


def _without_collector() -> None:
    """Run this harness process (producer, clients, floor) without the cyclic garbage collector.
    Its pauses are the harness's, not the system's, yet they would be measured as the system's
    latency: the producer holds thousands of pending sends, and a collection over them stalled it
    for tens of ms (producer late at p99: 25 ms with the collector, 5 ms without, at 10,000 tok/s
    with Kafka alone). A point lasts seconds; what it frees is freed by reference counting."""
    gc.collect()
    gc.freeze()
    gc.disable()


# --------------------------------------------------------------------------- the producer


def _produce(bootstrap: str, cids: list[str], point: Point, start_at: float, out: Any) -> None:
    _without_collector()
    asyncio.run(_produce_async(bootstrap, cids, point, start_at, out))


async def _produce_async(bootstrap: str, cids: list[str], point: Point, start_at: float, out: Any) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from schemas.chain import GENESIS, seal_encoded
    from schemas.records import ResponseCompleted, ResponseStarted, TokenDelta, TokenEvent, now_ms
    from schemas.registry import TOKENS_TOPIC

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=0)
    await producer.start()
    heads = dict.fromkeys(cids, GENESIS)
    pending: list[Any] = []
    # The worker writes to the partition its prompt came from, named (no partitioner per record);
    # the same partition the key hashes to.
    partitions = sorted(await producer.partitions_for(TOKENS_TOPIC))
    by_key = DefaultPartitioner()
    partition = {cid: by_key(cid.encode(), partitions, partitions) for cid in cids}

    async def send(event: TokenEvent, sched_ns: int = 0) -> None:
        cid = event.conversation_id
        sealed, value = seal_encoded(event, heads[cid])
        heads[cid] = sealed.hash
        headers = [("t", str(sched_ns).encode())] if sched_ns else []
        fut = await producer.send(
            TOKENS_TOPIC, value, key=cid.encode(), partition=partition[cid], headers=headers
        )
        pending.append(fut)

    try:
        for cid in cids:
            await send(ResponseStarted(cid, f"r-{cid}", "p-1", "bench", "load", "demo", now_ms()))
        await asyncio.gather(*pending)
        pending.clear()
        # Schedule: answer i's delta k is due at start + i/(answers*rate) + k/rate.
        period_ns = int(1e9 / point.rate)
        stagger_ns = period_ns / len(cids)
        t0 = int(start_at * 1e9)
        total = int(point.rate * (point.warmup_s + point.seconds))
        filler = " tok" * (point.tokens_per_delta - 1)
        late_ns = []
        sent = 0
        cpu0 = time.process_time()
        for k in range(total):
            for i, cid in enumerate(cids):
                due = t0 + k * period_ns + int(i * stagger_ns)
                now = time.time_ns()
                if due > now:
                    await asyncio.sleep((due - now) / 1e9)
                else:
                    late_ns.append(now - due)
                await send(TokenDelta(cid, f"r-{cid}", k, f"t{due}{filler}", due // 1_000_000), due)
                sent += 1
            if len(pending) > 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        pending.clear()
        for cid in cids:
            await send(ResponseCompleted(cid, f"r-{cid}", total - 1, now_ms()))
        await asyncio.gather(*pending)
        late = np.array(late_ns, dtype=np.int64)
        out.put({"sent": sent, "late": histogram(late), "cpu_s": time.process_time() - cpu0})
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- the clients


@dataclass(frozen=True)
class ClientsJob:
    url: str
    token: str
    cids: list[str]
    deadline: float


def _clients(job: ClientsJob, ready: Any, out: Any) -> None:
    _without_collector()
    asyncio.run(_clients_async(job, ready, out))


async def _clients_async(job: ClientsJob, ready: Any, out: Any) -> None:
    import orjson
    import websockets

    from gateway.wire import SSEDecoder

    url, token, cids, deadline = job.url, job.token, job.cids, job.deadline
    samples: dict[str, list[tuple[int, int]]] = {"ws": [], "sse": []}
    """(scheduled send ns, latency ns) per delta received, by transport."""
    problems: dict[str, Any] = {"lost": 0, "duplicated": 0, "unfinished": 0, "errors": []}
    subscribed = 0
    all_subscribed = asyncio.Event()

    def on_frame(frame: dict[str, Any], state: dict[str, int], kind: str) -> bool:
        """Record one frame; True when the answer ended."""
        t = frame.get("type")
        if t == "token":
            now = time.time_ns()
            seq = frame["seq"]
            if seq <= state["seq"]:
                problems["duplicated"] += 1
                return False
            if seq != state["seq"] + 1:
                problems["lost"] += seq - state["seq"] - 1
            state["seq"] = seq
            sched = int(frame["text"].split(" ", 1)[0][1:])
            samples[kind].append((sched, now - sched))
        return t == "response.completed"

    def note_subscribed() -> None:
        nonlocal subscribed
        subscribed += 1
        if subscribed == len(cids):
            all_subscribed.set()

    async def ws_client(cid: str) -> None:
        state = {"seq": -1}
        target = url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={token}"
        async with websockets.connect(target, compression=None, max_queue=None, open_timeout=60) as ws:
            await ws.send('{"type":"subscribe","cursor":"now"}')
            async for message in ws:
                frame = orjson.loads(message)
                if frame["type"] == "subscribed":
                    note_subscribed()
                elif on_frame(frame, state, "ws"):
                    return

    async def sse_client(cid: str) -> None:
        # HTTP/1.1 over asyncio streams: httpx (anyio's library sniffing and a selector
        # register/unregister per read) cost this process more CPU than the frames themselves,
        # CPU the measured processes share.
        state = {"seq": -1}
        decoder = SSEDecoder()
        where = urlsplit(url)
        host, port = where.hostname or "127.0.0.1", where.port or 80
        query = urlencode({"access_token": token, "cursor": "now"})
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
        try:
            writer.write(
                f"GET /v1/conversations/{cid}/events?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            status = await reader.readline()
            if status.split(b" ", 2)[1:2] != [b"200"]:
                raise RuntimeError(f"the events stream answered {status!r}")
            chunked = False
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                chunked |= name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower()
            note_subscribed()  # the stream is open: events from here on are delivered
            while True:
                if chunked:
                    size = int((await reader.readline()).split(b";", 1)[0], 16)
                    data = (await reader.readexactly(size + 2))[:size]
                else:
                    data = await reader.read(65536)
                if not data:
                    return
                for _, _, frame in decoder.feed(data):
                    if frame and on_frame(orjson.loads(frame), state, "sse"):
                        return
        finally:
            writer.close()

    async def client(i: int, cid: str) -> None:
        try:
            await (ws_client(cid) if i % 2 == 0 else sse_client(cid))
        except Exception as exc:
            body = getattr(getattr(exc, "response", None), "body", b"") or b""  # a refused handshake's
            problems["errors"].append(f"{cid}: {type(exc).__name__} {bytes(body)[:300]!r} {exc!r}"[:600])
            if not all_subscribed.is_set():
                note_subscribed()
            raise

    tasks = [asyncio.create_task(client(i, cid)) for i, cid in enumerate(cids)]
    await asyncio.wait_for(all_subscribed.wait(), 120)
    await asyncio.sleep(0.5)  # the SSE streams' first bytes have gone through the gateway
    ready.set()
    cpu0 = time.process_time()
    done, still = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.time()))
    for task in still:
        task.cancel()
    problems["unfinished"] = len(still)
    for task in done:
        if task.exception() is not None:
            problems["unfinished"] += 1
    out.put(
        {
            "ws": np.array(samples["ws"], dtype=np.int64).reshape(-1, 2),
            "sse": np.array(samples["sse"], dtype=np.int64).reshape(-1, 2),
            "problems": problems,
            "cpu_s": time.process_time() - cpu0,
        }
    )


# --------------------------------------------------------------------------- the floor


def _floor(bootstrap: str, prefix: str, signals: tuple[Any, Any, Any], out: Any) -> None:
    """``signals``: (stop, ready, expected) shared with the parent."""
    _without_collector()
    asyncio.run(_floor_async(bootstrap, prefix, signals, out))


async def _floor_async(bootstrap: str, prefix: str, signals: tuple[Any, Any, Any], out: Any) -> None:
    """Record every delta of this run until told to stop, and then until it has the ``expected``
    number (the producer's count) or a minute has passed: a floor that trails is measured, not cut."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from infra.settings import TopicSettings
    from schemas.registry import TOKENS_TOPIC

    stop, ready, expected = signals
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=500)
    await consumer.start()
    samples: list[tuple[int, int]] = []
    key_prefix = prefix.encode()
    try:
        tps = [TopicPartition(TOKENS_TOPIC, p) for p in range(TopicSettings().partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        cpu0 = time.process_time()
        deadline = None
        while True:
            if stop.is_set():
                deadline = deadline or time.monotonic() + 60
                if len(samples) >= expected.value or time.monotonic() > deadline:
                    break
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time_ns()
            for records in batches.values():
                for record in records:
                    if record.key.startswith(key_prefix) and record.headers:
                        sched = int(record.headers[0][1])
                        samples.append((sched, now - sched))
        out.put(
            {"floor": np.array(samples, dtype=np.int64).reshape(-1, 2), "cpu_s": time.process_time() - cpu0}
        )
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- one point


def run_point(bootstrap: str, url: str, token: str, point: Point, pids: dict[str, int]) -> dict[str, Any]:
    """Measure one load point; every figure of it, including whether nothing was lost."""
    ctx = mp.get_context("spawn")
    run = f"load-{os.getpid()}-{time.time_ns() % 10**9}-"
    cids = [f"{run}{i:04d}" for i in range(point.answers)]
    duration = point.warmup_s + point.seconds
    queue: Any = ctx.Queue()
    clients_ready, floor_ready, floor_stop = ctx.Event(), ctx.Event(), ctx.Event()
    floor_expected = ctx.Value("q", 0)
    far = time.time() + duration + 180
    job = ClientsJob(url, token, [cid for cid in cids for _ in range(point.devices)], far)
    clients = ctx.Process(target=_clients, args=(job, clients_ready, queue), daemon=True)
    if point.clients:
        clients.start()
        if not clients_ready.wait(180):
            raise RuntimeError("the clients did not subscribe in time")
    floor = ctx.Process(
        target=_floor, args=(bootstrap, run, (floor_stop, floor_ready, floor_expected), queue), daemon=True
    )
    floor.start()
    if not floor_ready.wait(60):
        raise RuntimeError("the floor consumer did not start")
    start_at = time.time() + 1.0
    producer = ctx.Process(target=_produce, args=(bootstrap, cids, point, start_at, queue), daemon=True)
    producer.start()
    watched = {**pids, "producer": producer.pid or 0, "floor": floor.pid or 0}
    if point.clients:
        watched["clients"] = clients.pid or 0
    time.sleep(max(0.0, start_at + point.warmup_s - time.time()))
    cpu0 = {name: cpu_seconds(pid) for name, pid in watched.items()}
    queued0 = {name: run_queue(pid) for name, pid in watched.items()}
    metrics0 = _metrics(url) if point.clients else ""
    time.sleep(point.seconds)
    cpu1 = {name: cpu_seconds(pid) for name, pid in watched.items()}
    queued = {name: cpu_wait(queued0[name], run_queue(pid), point.seconds) for name, pid in watched.items()}
    metrics1 = _metrics(url) if point.clients else ""
    results: dict[str, Any] = {}
    for _ in range(2 if point.clients else 1):  # the producer's and the clients' reports
        results.update(queue.get(timeout=duration + 240))
    floor_expected.value = results["sent"]
    floor_stop.set()
    results.update(queue.get(timeout=120))  # the floor's report
    for proc in (floor, producer, clients) if point.clients else (floor, producer):
        proc.join(30)
    if not point.clients:
        none = np.zeros((0, 2), dtype=np.int64)
        results.update(
            ws=none, sse=none, problems={"lost": 0, "duplicated": 0, "unfinished": 0, "errors": []}
        )
    window = (int((start_at + point.warmup_s) * 1e9), int((start_at + duration) * 1e9))
    summary = summarize(point, results, {k: cpu1[k] - cpu0[k] for k in cpu0}, window, queued)
    if metrics0 and metrics1:
        from bench.gateway import bucket_quantiles

        summary["gateway_delivery_ms"] = bucket_quantiles(
            metrics0, metrics1, "tokenlog_gateway_delivery_seconds"
        )
    return summary


def _metrics(url: str) -> str:
    """The gateway's /metrics ("" if it does not answer: the point is measured without it)."""
    import httpx

    from bench.gateway import scrape

    try:
        return asyncio.run(scrape(url))
    except httpx.HTTPError:
        return ""


def summarize(
    point: Point,
    results: dict[str, Any],
    cpu: dict[str, float],
    window: tuple[int, int],
    cpu_waits: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Percentiles over the deltas scheduled in the measured window (after the warm-up)."""
    ws, sse, floor = results["ws"], results["sse"], results["floor"]

    def steady(samples: np.ndarray) -> np.ndarray:
        inside = (samples[:, 0] >= window[0]) & (samples[:, 0] < window[1])
        selected: np.ndarray = samples[inside, 1]
        return selected

    system = {"ws": histogram(steady(ws)), "sse": histogram(steady(sse))}
    system["all"] = histogram(np.concatenate([steady(ws), steady(sse)]))
    floor_h = histogram(steady(floor))
    added = {
        name: round(system["all"][name] - floor_h[name], 3)
        for name in PERCENTILES
        if name in system["all"] and name in floor_h
    }
    delivered = int(len(ws) + len(sse))
    tokens = point.tokens_per_s * point.seconds
    frames_in_window = int(steady(ws).size + steady(sse).size)
    return {
        "answers": point.answers,
        "rate_per_answer": point.rate,
        "tokens_per_delta": point.tokens_per_delta,
        "offered_tokens_per_s": point.tokens_per_s,
        "offered_events_per_s": point.answers * point.rate,
        "sent": results["sent"],
        "delivered": delivered,
        "floor_received": len(floor),
        "problems": results["problems"],
        "producer_late": results["late"],
        "latency_ms": system,
        "floor_ms": floor_h,
        "gateway_added_ms": added,
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_us_per_token": round(sum(cpu.values()) / tokens * 1e6, 1) if tokens else None,
        "devices": point.devices,
        "frames_per_gateway_core_s": round(frames_in_window / cpu["gateway"]) if cpu.get("gateway") else None,
        "cpu_utilisation": {k: round(v / point.seconds, 2) for k, v in cpu.items()},
        "cpu_wait": cpu_waits or {},
    }
