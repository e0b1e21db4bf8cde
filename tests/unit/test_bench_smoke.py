"""`make bench` keeps working: a tiny run of each benchmark (figures are not judged here)."""

from __future__ import annotations

from bench.codec import run


def test_codec_benchmark_runs_and_both_libraries_agree_on_the_bytes() -> None:
    figures = run(seconds=0.01, repeats=1)  # raises if fastavro and avro disagree
    assert figures["record_bytes"] > 10
    assert all(figures[k] > 0 for k in figures if k.endswith("_us"))
