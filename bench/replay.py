"""Replay throughput: events/s rebuilt and verified from the log, against the floor of reading the
same records with aiokafka alone (no decoding) in the same run.

    python -m bench.replay [--events 1000000] [--deltas 100] [--partitions 4]

Writes chained answers (ResponseStarted, ``deltas`` TokenDeltas, ResponseCompleted) to scratch
topics, then reads them back three ways: the raw floor, the replay of everything (decode, reader
rule, chain verification, turns), and one conversation. Uses ``KAFKA_BOOTSTRAP_SERVERS`` or starts
a local broker of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.worker import kafka
from pipeline.replay.source import ReplaySource, Selection
from schemas.chain import GENESIS, seal
from schemas.codec import PROMPTS, TOKENS
from schemas.records import PromptSubmitted, ResponseCompleted, ResponseStarted, TokenDelta, TokenEvent, Usage

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = [" the", " log", " is", " the", " system", " of", " record", " and", " every", " token", " counts"]


def answer(cid: str, rid: str, deltas: int, at: int) -> list[TokenEvent]:
    events: list[TokenEvent] = [ResponseStarted(cid, rid, f"p-{rid}", "u-bench", "Why?", "demo", at)]
    events += [TokenDelta(cid, rid, seq, WORDS[seq % len(WORDS)], at + seq) for seq in range(deltas)]
    events.append(ResponseCompleted(cid, rid, deltas - 1, at + deltas, "stop", Usage(3, deltas, deltas + 3)))
    head, sealed = GENESIS, []
    for event in events:
        sealed.append(seal(event, head))
        head = sealed[-1].hash
    return sealed


async def make_topics(bootstrap: str, partitions: int) -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    names = (f"bench.replay.{run}.tokens", f"bench.replay.{run}.prompts")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=config) for n in names])
    finally:
        await admin.close()
    return names


async def write(bootstrap: str, tokens: str, prompts: str, events: int, deltas: int) -> dict[str, Any]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1, enable_idempotence=False
    )
    await producer.start()
    written, answers, began = 0, 0, time.perf_counter()
    try:
        pending = []
        while written < events:
            cid, rid = f"c-{answers % 2000:05d}", f"r-{answers:07d}"
            now = int(time.time() * 1000)
            prompt = PromptSubmitted(cid, f"p-{rid}", "u-bench", "Why?", now)
            pending.append(await producer.send(prompts, PROMPTS.encode(prompt), key=cid.encode()))
            for event in answer(cid, rid, deltas, now):
                pending.append(await producer.send(tokens, TOKENS.encode(event), key=cid.encode()))
                written += 1
            answers += 1
            if len(pending) > 50_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {"events": written, "answers": answers, "write_s": round(time.perf_counter() - began, 2)}


async def floor(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[str, float]:
    """Records/s aiokafka alone delivers from the topic (no decoding), same fetch sizes as replay."""
    source = ReplaySource(bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=source.fetch_max_bytes,
        max_partition_fetch_bytes=source.partition_fetch_bytes,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, nbytes, began = 0, 0, time.perf_counter()
        while seen < expected:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen += len(records)
                nbytes += sum(len(r.value) for r in records)
        took = time.perf_counter() - began
        return {
            "records_per_s": round(seen / took),
            "mb_per_s": round(nbytes / took / 1e6, 1),
            "s": round(took, 2),
        }
    finally:
        await consumer.stop()


async def measure(bootstrap: str, events: int, deltas: int, partitions: int) -> dict[str, Any]:
    tokens, prompts = await make_topics(bootstrap, partitions)
    figures: dict[str, Any] = {"deltas_per_answer": deltas, "partitions": partitions}
    figures["written"] = await write(bootstrap, tokens, prompts, events, deltas)
    total = figures["written"]["events"]
    figures["floor"] = await floor(bootstrap, tokens, partitions, total)
    source = ReplaySource(bootstrap, tokens_topic=tokens, prompts_topic=prompts)
    replay, stats = await source.replay(Selection(since_ms=0))
    turns, findings = replay.turns(), replay.findings()
    if stats.events != total or len(turns) != figures["written"]["answers"] or findings:
        raise AssertionError(f"replay read {stats.events} of {total} events, {len(findings)} findings")
    if any(t.status != "completed" or t.chain != "intact" or t.deltas != deltas for t in turns):
        raise AssertionError("a replayed answer is not complete and intact")
    figures["replay_all"] = {
        "events": stats.events,
        "s": round(stats.seconds, 2),
        "events_per_s": round(stats.events_per_s),
        "mb": round(stats.bytes / 1e6, 1),
        "of_floor": round(stats.events_per_s / figures["floor"]["records_per_s"], 3),
    }
    one = ReplaySource(bootstrap, tokens_topic=tokens, prompts_topic=prompts)
    replay, stats = await one.replay(Selection(conversation="c-00007"))
    figures["replay_one_conversation"] = {
        "records_scanned": stats.records,
        "events_decoded": stats.events,
        "turns": len(replay.turns()),
        "s": round(stats.seconds, 2),
        "records_per_s": round(stats.events_per_s),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--deltas", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with kafka() as bootstrap:
        figures = asyncio.run(measure(bootstrap, args.events, args.deltas, args.partitions))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(figures, indent=2) + "\n")
    w, f, r, o = (
        figures["written"],
        figures["floor"],
        figures["replay_all"],
        figures["replay_one_conversation"],
    )
    print(f"replay: {w['events']:,} token events ({w['answers']:,} answers) written in {w['write_s']} s")
    print(f"  floor  (aiokafka, no decoding): {f['records_per_s']:>9,} records/s  {f['mb_per_s']} MB/s")
    print(
        f"  replay (decode, verify chain, rebuild turns): {r['events_per_s']:>9,} events/s "
        f"({r['of_floor']:.0%} of the floor), {r['events']:,} events in {r['s']} s"
    )
    print(
        f"  one conversation: {o['turns']} turns, {o['events_decoded']:,} events decoded of "
        f"{o['records_scanned']:,} records scanned in {o['s']} s"
    )
    print(f"written to {RESULTS / 'replay.json'}")


if __name__ == "__main__":
    main()
