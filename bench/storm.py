"""Reconnect storm: many clients dropped at once, all resuming at once.

``clients`` WebSocket clients follow ``conversations`` conversations (several devices each), each
conversation with ``history`` events. Every client reads to the end, then all connections are cut
at the same moment (the transport aborted, as a lost network does) and every client reconnects at
once with the cursor it had ``missed`` events back. Measured: the time from the reconnects until
every client is subscribed again (live) and until every one has its missed events, and how the
gateway served the resumes (memory window or broker reads), per conversation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import websockets
from aiokafka import AIOKafkaProducer

from bench.gateway import resumes_by_path
from schemas.codec import TOKENS
from schemas.records import ResponseStarted, TokenDelta, now_ms
from schemas.registry import TOKENS_TOPIC


async def write_history(bootstrap: str, cids: list[str], history: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for cid in cids:
            rid = f"r-{cid}"
            events: list[Any] = [ResponseStarted(cid, rid, "p-1", "bench", "storm", "demo", now_ms())]
            events += [TokenDelta(cid, rid, i, f" w{i}", now_ms()) for i in range(history - 1)]
            futures += [await producer.send(TOKENS_TOPIC, TOKENS.encode(e), key=cid.encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def storm(
    bootstrap: str,
    url: str,
    token: str,
    *,
    clients: int,
    conversations: int,
    history: int = 20,
    missed: int = 5,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    cids = [f"storm-{run}-{i:04d}" for i in range(conversations)]
    await write_history(bootstrap, cids, history)
    base = url.replace("http://", "ws://")

    async def follow(cid: str, cursor: str, until: int) -> tuple[Any, list[str], float]:
        """Connect, subscribe, read ``until`` events; (socket, their cursors, seconds to subscribed)."""
        began = time.perf_counter()
        ws = await websockets.connect(
            f"{base}/v1/conversations/{cid}/ws?access_token={token}",
            compression=None,
            max_queue=None,
            open_timeout=60,
        )
        await ws.send(orjson.dumps({"type": "subscribe", "cursor": cursor}).decode())
        live_after, cursors, kinds = 0.0, list[str](), list[str]()
        while len(cursors) < until:
            try:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            except TimeoutError:
                raise TimeoutError(f"{cid} from {cursor}: nothing for 60 s after {kinds}") from None
            kinds.append(frame["type"])
            if frame["type"] == "subscribed":
                live_after = time.perf_counter() - began
            elif "cursor" in frame and frame["type"] in ("token", "response.started"):
                cursors.append(frame["cursor"])
        return ws, cursors, live_after

    first = await asyncio.gather(
        *(follow(cids[i % conversations], "beginning", history) for i in range(clients)),
        return_exceptions=True,
    )
    errors = [f"first read: {r!r}" for r in first if isinstance(r, BaseException)]
    if errors:  # the storm needs every client reading first; report what went wrong instead
        for r in first:
            if not isinstance(r, BaseException):
                await r[0].close()
        return {
            "clients": clients,
            "conversations": conversations,
            "failed": len(errors),
            "errors": errors[:5],
        }
    read = [r for r in first if not isinstance(r, BaseException)]
    resume_from = [cursors[-1 - missed] for _, cursors, _ in read]
    before = await resumes_by_path(url)
    for ws, _, _ in read:
        ws.transport.abort()  # the network is gone: no close handshake
    began = time.perf_counter()
    second = await asyncio.gather(
        *(follow(cids[i % conversations], resume_from[i], missed) for i in range(clients)),
        return_exceptions=True,
    )
    caught_up = time.perf_counter() - began
    failed = [r for r in second if isinstance(r, BaseException)]
    ok = [r for r in second if not isinstance(r, BaseException)]
    for ws, _, _ in ok:
        await ws.close()
    after = await resumes_by_path(url)
    served = {path: after.get(path, 0) - before.get(path, 0) for path in after}
    reads = sum(n for path, n in served.items() if path != "memory")
    return {
        "clients": clients,
        "conversations": conversations,
        "missed": missed,
        "failed": len(failed),
        "errors": [repr(e) for e in failed[:5]],
        "all_live_s": round(max(live for _, _, live in ok), 3) if ok else None,
        "all_caught_up_s": round(caught_up, 3),
        "resumes_by_path": served,
        "broker_reads_per_conversation": round(reads / conversations, 3),
    }
