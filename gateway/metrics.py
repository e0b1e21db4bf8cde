"""The gateway's Prometheus metrics (one registry per process)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.entry import Entry

RESUME_PATHS = ("memory", "seek", "snapshot", "log", "resync")
DELIVERY_SAMPLE = 8
"""One live frame in this many (by offset) is timed in ``tokenlog_gateway_delivery_seconds``: a
histogram observation costs about as much as a tenth of the frame's own write."""
DELIVERY_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.006, 0.008)
DELIVERY_BUCKETS += (0.012, 0.016, 0.025, 0.05, 0.1, 1.0)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("tokenlog_gateway_connections", "Open streams", ["transport"], registry=r)
        self.delivered = Counter(
            "tokenlog_gateway_events_delivered", "Event frames written to clients", ["transport"], registry=r
        )
        self.resumes = Counter(
            "tokenlog_gateway_resumes",
            "Streams opened, by how they were served: memory window, seek, snapshot (hydrate from the "
            "session service), log (hydrate from the log), resync",
            ["path"],
            registry=r,
        )
        self.resume_seconds = Histogram(
            "tokenlog_gateway_resume_seconds",
            "From a stream's request to its catch-up done",
            ["path"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.snapshot_folds = Counter(
            "tokenlog_gateway_snapshot_folds",
            "Snapshots served, by how the gateway's tail was folded in: folded, current (nothing to "
            "fold), log (a takeover it could not apply: rebuilt from the log), unread (the tail "
            "could not be read: served as the session app had it)",
            ["outcome"],
            registry=r,
        )
        self.slow_closes = Counter(
            "tokenlog_gateway_slow_client_closes",
            "Streams closed for falling behind",
            ["transport"],
            registry=r,
        )
        self.client_lag = Gauge(
            "tokenlog_gateway_client_lag_frames", "Most frames queued for one connection", registry=r
        )
        self.indexed_from = Gauge(
            "tokenlog_gateway_indexed_from",
            "Per partition, the offset from which the offset index is complete (the backfill's start)",
            ["partition"],
            registry=r,
        )
        self.reader_lag = Gauge(
            "tokenlog_gateway_reader_lag", "Records the tail reader is behind", ["partition"], registry=r
        )
        self.undecodable = Counter(
            "tokenlog_gateway_undecodable_records", "Records of conversation.tokens skipped", registry=r
        )
        self.commands = Counter(
            "tokenlog_gateway_commands", "Prompts and cancels by outcome", ["kind", "outcome"], registry=r
        )
        self.errors = Counter("tokenlog_gateway_errors", "Errors returned, by code", ["code"], registry=r)
        self.window_events = Gauge(
            "tokenlog_gateway_window_events", "Events held in memory windows", registry=r
        )
        self.conversations = Gauge(
            "tokenlog_gateway_conversations", "Conversations the hub holds", registry=r
        )
        self.catchup_records = Gauge(
            "tokenlog_gateway_catchup_records_read",
            "Records the catch-up reads have taken from the broker since start (wanted or not)",
            registry=r,
        )
        self.delivery = Histogram(
            "tokenlog_gateway_delivery_seconds",
            f"Live events, from the tail reader taking the record from the log to its frame written to "
            f"the client's socket (one frame in {DELIVERY_SAMPLE}, by offset): the gateway's own part "
            f"of a token's latency",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.gc_frozen = Gauge(
            "tokenlog_gateway_gc_frozen_objects",
            "Objects moved out of the collector's reach at start (TOKENLOG_GATEWAY_GC_FREEZE)",
            registry=r,
        )
        self.gc_pause = Histogram(
            "tokenlog_gateway_gc_pause_seconds",
            "Garbage collections of this process, by generation: the process writes no frame during one",
            ["generation"],
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
            registry=r,
        )

    def written(self, items: Iterable[object]) -> None:
        """``items`` were just written to a client's socket: time the sampled live events."""
        now = time.monotonic_ns()
        delivery = self.delivery
        for item in items:
            if isinstance(item, Entry) and item.read_ns and not item.offset % DELIVERY_SAMPLE:
                delivery.observe((now - item.read_ns) / 1e9)
