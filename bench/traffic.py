"""Resume through the seek path against unrelated traffic in the same partition.

One conversation gets ``missed`` deltas interleaved with ``other`` events of other conversations
in its partition; a client then resumes from the cursor before the missed deltas on a gateway
whose memory window is tiny (every resume seeks). With the gateway's per-conversation offset
index the reads follow the missed events, not the partition's size: the time should stay flat as
``other`` grows from zero to a million.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from bench.gateway import metric_samples, percentiles, resume_sse, resume_ws, scrape
from infra.settings import TopicSettings
from infra.topics import partition_for
from schemas.codec import TOKENS
from schemas.cursor import Cursor
from schemas.records import ResponseStarted, TokenDelta, now_ms
from schemas.registry import TOKENS_TOPIC

BATCHES = {"large": (20, 1 << 20), "small": (0, 512)}
"""(linger ms, max batch bytes): bulk writes (~10,000 records per batch), or worker-like ones
(a record batch holds a record or two, as when a worker sends each token at once)."""


async def interleave(
    bootstrap: str, cid: str, missed: int, other: int, batches: str = "large"
) -> tuple[int, int]:
    """Write ``cid``'s answer start, then ``missed`` deltas spread evenly among ``other`` records
    of other conversations of the same partition; (partition, offset of the start)."""
    partition = partition_for(cid, TopicSettings().partitions)
    noise = TOKENS.encode(TokenDelta(f"noise-{uuid.uuid4().hex[:8]}", "r-noise", 1, " noise", now_ms()))
    linger, batch_bytes = BATCHES[batches]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=linger,
        max_batch_size=batch_bytes,
        acks=1,
        enable_idempotence=False,
    )
    await producer.start()
    try:
        rid = f"r-{uuid.uuid4().hex}"
        start = await producer.send(
            TOKENS_TOPIC, TOKENS.encode(ResponseStarted(cid, rid, "p-1", "bench", "q", "m", now_ms())),
            key=cid.encode(), partition=partition,
        )  # fmt: skip
        pending = []
        per_gap = other // max(1, missed)
        for seq in range(missed):
            for _ in range(per_gap):
                pending.append(await producer.send(TOKENS_TOPIC, noise, key=b"noise", partition=partition))
            delta = TokenDelta(cid, rid, seq, f" w{seq}", now_ms())
            pending.append(
                await producer.send(TOKENS_TOPIC, TOKENS.encode(delta), key=cid.encode(), partition=partition)
            )
            if len(pending) > 50_000:
                for fut in pending:
                    await fut
                pending.clear()
        for fut in pending:
            await fut
        return partition, int((await start).offset)
    finally:
        await producer.stop()


async def caught_up(http: httpx.AsyncClient, url: str, timeout_s: float = 180.0) -> None:
    """Until the gateway's tail reader reports no lag on any partition in two readings of its
    metrics more than a second apart (its probe of the log's end runs every second)."""
    deadline = time.monotonic() + timeout_s
    clean_since: float | None = None
    while time.monotonic() < deadline:
        lags = [value for _, value in metric_samples(await scrape(url, http), "tokenlog_gateway_reader_lag")]
        now = time.monotonic()
        if lags and max(lags) <= 0:
            clean_since = clean_since or now
            if now - clean_since > 1.1:
                return
        else:
            clean_since = None
        await asyncio.sleep(0.25)
    raise TimeoutError("the gateway's reader did not catch up")


async def measure(
    bootstrap: str,
    url: str,
    token: str,
    epoch: str,
    *,
    missed: int,
    others: list[int],
    resumes: int,
    small_batches: Sequence[int] = (),
) -> list[dict[str, Any]]:
    points = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        for other, batches in [*((o, "large") for o in others), *((o, "small") for o in small_batches)]:
            cid = f"traffic-{uuid.uuid4().hex[:12]}"
            began = time.perf_counter()
            partition, start = await interleave(bootstrap, cid, missed, other, batches)
            written_s = time.perf_counter() - began
            await caught_up(http, url)  # measure resumes, not the gateway digesting the burst
            cursor = Cursor(epoch, partition, start).format()  # everything after the start is missed
            for transport in ("ws", "sse"):
                firsts, alls = [], []
                for _ in range(resumes):
                    if transport == "ws":
                        first, done = await resume_ws(url, cid, token, cursor, missed)
                    else:
                        first, done = await resume_sse(
                            http, url, cid, token=token, cursor=cursor, missed=missed
                        )
                    firsts.append(first)
                    alls.append(done)
                first_p, all_p = percentiles(firsts), percentiles(alls)
                points.append(
                    {
                        "other_events": other,
                        "batches": batches,
                        "missed": missed,
                        "transport": transport,
                        "first_event": first_p,
                        "all_events": all_p,
                        "write_s": round(written_s, 1),
                    }
                )
                print(
                    f"  seek {transport:3} {missed} missed among {other:>9,} other ({batches} batches): "
                    f"first p50 {first_p['p50_ms']:7.2f} p99 {first_p['p99_ms']:7.2f} ms, "
                    f"all p50 {all_p['p50_ms']:7.2f} ms",
                    flush=True,
                )
    return points
