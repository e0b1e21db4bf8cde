"""Encode and decode cost per TokenDelta: fastavro (our hot path) against the ``avro`` package,
side by side in one run, plus the full ``schemas`` codec (dataclass <-> single-object bytes).

    python -m bench.codec [--seconds 1.0] [--repeats 5]

Each figure is the best of ``repeats`` timed loops of about ``seconds`` each (the least
disturbed by the other tenants of a shared machine); ratios are taken within the run.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro

from schemas.codec import HEADER_SIZE, TOKENS
from schemas.records import TokenDelta, to_avro
from schemas.registry import current, strip_logical_types

RESULTS = Path(__file__).resolve().parent / "results"

SAMPLE = TokenDelta(
    conversation_id="c-7f3a9e1b2c4d",
    response_id="r-0b8e6f5a4d3c2b1a",
    seq=1234,
    text=" streaming",
    produced_at=1_795_000_000_123,
    attempt=0,
)


def per_op_us(fn: Callable[[], Any], seconds: float, repeats: int) -> float:
    """Best-of-``repeats`` microseconds per call."""
    n = 1
    while True:  # calibrate the loop length to about `seconds`
        began = time.perf_counter()
        for _ in range(n):
            fn()
        took = time.perf_counter() - began
        if took > seconds / 10:
            break
        n *= 2
    n = max(1, int(n * seconds / took))
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - began) / n)
    return best * 1e6


def run(seconds: float = 1.0, repeats: int = 5) -> dict[str, Any]:
    raw = strip_logical_types(current("conversation.tokens").raw)
    fast_schema = fastavro.parse_schema(raw)
    slow_schema = avro.schema.parse(json.dumps(raw))
    envelope = to_avro(SAMPLE)
    plain = {"conversation_id": envelope["conversation_id"], "payload": envelope["payload"][1]}

    def fast_encode() -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fast_schema, envelope)
        return buf.getvalue()

    writer = avro.io.DatumWriter(slow_schema)
    reader = avro.io.DatumReader(slow_schema, slow_schema)

    def slow_encode() -> bytes:
        buf = io.BytesIO()
        writer.write(plain, avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    body = fast_encode()
    if slow_encode() != body:
        raise AssertionError("fastavro and avro disagree on the bytes of the same record")

    def fast_decode() -> Any:
        return fastavro.schemaless_reader(io.BytesIO(body), fast_schema, None)

    def slow_decode() -> Any:
        return reader.read(avro.io.BinaryDecoder(io.BytesIO(body)))

    if fast_decode()["payload"] != slow_decode()["payload"]:
        raise AssertionError("fastavro and avro decode the same bytes differently")

    wire = TOKENS.encode(SAMPLE)
    if wire[HEADER_SIZE:] != body:
        raise AssertionError("the project codec's body differs from plain Avro")
    figures = {
        "fastavro_encode_us": per_op_us(fast_encode, seconds, repeats),
        "avro_encode_us": per_op_us(slow_encode, seconds, repeats),
        "fastavro_decode_us": per_op_us(fast_decode, seconds, repeats),
        "avro_decode_us": per_op_us(slow_decode, seconds, repeats),
        "tokenlog_encode_us": per_op_us(lambda: TOKENS.encode(SAMPLE), seconds, repeats),
        "tokenlog_decode_us": per_op_us(lambda: TOKENS.decode(wire), seconds, repeats),
    }
    figures["encode_speedup"] = figures["avro_encode_us"] / figures["fastavro_encode_us"]
    figures["decode_speedup"] = figures["avro_decode_us"] / figures["fastavro_decode_us"]
    figures["record_bytes"] = len(wire)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.codec")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    figures = run(args.seconds, args.repeats)
    print(f"TokenDelta codec, {figures['record_bytes']} bytes on the wire, best of {args.repeats}:")
    print(f"  {'':28} {'encode µs':>10} {'decode µs':>10}")
    for label, key in (
        ("avro package", "avro"),
        ("fastavro", "fastavro"),
        ("tokenlog codec (dataclass)", "tokenlog"),
    ):
        print(f"  {label:28} {figures[key + '_encode_us']:>10.2f} {figures[key + '_decode_us']:>10.2f}")
    print(
        f"  fastavro is {figures['encode_speedup']:.1f}x faster to encode, "
        f"{figures['decode_speedup']:.1f}x faster to decode"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "codec.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
