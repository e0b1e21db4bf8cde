"""`make bench` keeps working: a tiny run of each benchmark (figures are not judged here)."""

from __future__ import annotations

from bench.codec import run


def test_codec_benchmark_runs_and_both_libraries_agree_on_the_bytes() -> None:
    figures = run(seconds=0.01, repeats=1)  # raises if fastavro and avro disagree
    assert figures["record_bytes"] > 10
    assert all(figures[k] > 0 for k in figures if k.endswith("_us"))


def test_the_bench_reads_a_metric_by_name_and_labels_from_the_gateways_exposition() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from bench.gateway import metric_samples

    registry = CollectorRegistry()
    resumes = Counter("tokenlog_gateway_resumes", "", ["path"], registry=registry)
    resumes.labels("memory").inc(3)
    pauses = Histogram("tokenlog_gateway_gc_pause_seconds", "", ["generation"], registry=registry)
    pauses.labels("2").observe(0.003)
    pauses.labels("2").observe(0.02)
    text = generate_latest(registry).decode()

    assert metric_samples(text, "tokenlog_gateway_resumes_total") == [({"path": "memory"}, 3.0)]
    buckets = {
        labels["le"]: count
        for labels, count in metric_samples(text, "tokenlog_gateway_gc_pause_seconds_bucket")
    }
    assert (buckets["0.005"], buckets["+Inf"]) == (1.0, 2.0)
    assert metric_samples(text, "tokenlog_gateway_missing") == []
