"""Prometheus metrics of the session-state app, in a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class SessionsMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.applied = Counter(
            "tokenlog_sessions_events_applied",
            "Events that changed a session, by topic",
            ["topic"],
            registry=r,
        )
        self.ignored = Counter(
            "tokenlog_sessions_events_ignored",
            "Events applied before (re-delivery) or not changing state, by topic",
            ["topic"],
            registry=r,
        )
        self.decode_errors = Counter(
            "tokenlog_sessions_decode_errors",
            "Records skipped because they are not tokenlog events",
            ["topic"],
            registry=r,
        )
        self.refused_prompts = Counter(
            "tokenlog_sessions_prompts_refused",
            "Prompts of a user who does not own the conversation, ignored (schemas.ownership)",
            registry=r,
        )
        self.refused_writes = Counter(
            "tokenlog_sessions_refused_writes",
            "Table values not stored because they were over max_value_bytes, by table",
            ["table"],
            registry=r,
        )
        self.snapshots = Counter(
            "tokenlog_sessions_snapshots_served",
            "Snapshot requests answered here, by status",
            ["status"],
            registry=r,
        )
        self.conversations = Gauge(
            "tokenlog_sessions_conversations", "Conversations in this worker's tables", registry=r
        )
        self.usage = Gauge(
            "tokenlog_sessions_usage_current_window",
            "Usage analytics of the current window for the models whose table partition lives here",
            ["model", "figure"],
            registry=r,
        )
        self.live_answers = Gauge(
            "tokenlog_sessions_live_answers", "Answers being written, in this worker's tables", registry=r
        )
