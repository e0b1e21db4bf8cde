"""The worker's Prometheus metrics, in a registry of its own (so tests can make several)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.in_flight = Gauge("tokenlog_worker_answers_in_flight", "Answers being generated now", registry=r)
        self.buffered = Gauge(
            "tokenlog_worker_prompts_buffered", "Prompts waiting in this process", registry=r
        )
        self.answers = Counter(
            "tokenlog_worker_answers", "Answers ended, by outcome", ["outcome"], registry=r
        )
        self.tokens = Counter("tokenlog_worker_tokens", "Model tokens (text pieces) generated", registry=r)
        self.deltas = Counter("tokenlog_worker_deltas", "TokenDelta events produced", registry=r)
        self.failovers = Counter(
            "tokenlog_worker_failovers", "Answers taken over from another worker", ["mode"], registry=r
        )
        self.skipped = Counter(
            "tokenlog_worker_prompts_skipped", "Prompts not answered again, by reason", ["reason"], registry=r
        )
        self.prompts_refused = Counter(
            "tokenlog_worker_prompts_refused",
            "Commands of a user who does not own the conversation, not acted on, by command",
            ["command"],
            registry=r,
        )
        self.decode_errors = Counter(
            "tokenlog_worker_decode_errors", "Prompt records that could not be decoded", registry=r
        )
        self.cancel_noops = Counter(
            "tokenlog_worker_cancel_noops", "Cancel requests with nothing running to stop", registry=r
        )
        self.ttft = Histogram(
            "tokenlog_worker_time_to_first_token_seconds",
            "Prompt accepted to first delta produced",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cancel_latency = Histogram(
            "tokenlog_worker_cancel_latency_seconds",
            "Cancel consumed to the answer's last event",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
