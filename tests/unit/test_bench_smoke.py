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


def test_the_bench_reads_how_long_a_process_waited_for_a_cpu() -> None:
    import os
    import time

    from bench.load import cpu_wait, run_queue

    before = run_queue(os.getpid())
    for _ in range(5):
        time.sleep(0.001)  # each wake-up puts this thread on a CPU again
    after = run_queue(os.getpid())
    assert after[1] >= before[1] + 5
    assert after[0] >= before[0]

    assert cpu_wait((1_000_000, 10), (7_000_000, 13), 2.0) == {"wait_ms_per_s": 3.0, "mean_wait_ms": 2.0}
    assert cpu_wait((5, 10), (5, 10), 1.0) == {"wait_ms_per_s": 0.0, "mean_wait_ms": 0.0}


def test_the_bench_takes_quantiles_of_what_a_histogram_observed_between_two_scrapes() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from bench.gateway import bucket_quantiles

    registry = CollectorRegistry()
    delivery = Histogram("d_seconds", "", buckets=(0.001, 0.002, 0.004, 0.008), registry=registry)
    delivery.observe(0.5)  # before the window: not counted
    before = generate_latest(registry).decode()
    for seconds in [0.0015] * 50 + [0.003] * 40 + [0.006] * 9 + [0.02]:
        delivery.observe(seconds)
    after = generate_latest(registry).decode()

    got = bucket_quantiles(before, after, "d_seconds")
    assert got["n"] == 100
    assert got["p50"] == 2.0, "the 50th of 100 is the last of the (1, 2] ms bucket"
    assert got["p90"] == 4.0
    assert 4.0 < got["p99"] <= 8.0, "inside the (4, 8] ms bucket"
    assert bucket_quantiles(after, after, "d_seconds") == {"n": 0}
