"""Settings for the infra processes, read once from the environment.

Every value has a prefixed variable (``TOKENLOG_...``); ``KAFKA_BOOTSTRAP_SERVERS`` keeps the
name every Kafka user knows. When it is set, no local broker is started.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.env import env_bool, env_float, env_int, env_str
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from infra.restarts import RestartPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """Partitioning and retention of the pipeline's topics (one place for all of them)."""

    partitions: int = 12
    """Partition count of ``conversation.prompts`` and ``conversation.tokens`` (co-partitioned)."""
    replication_factor: int = 1
    """Replication factor of every topic the project creates."""
    min_insync_replicas: int = 1
    """``min.insync.replicas`` of every topic; with ``acks=all`` a write needs this many copies."""
    prompts_retention_ms: int = 365 * DAY_MS
    """Retention of ``conversation.prompts`` (commands; the audit trail of what users asked)."""
    tokens_retention_ms: int = 365 * DAY_MS
    """Retention of ``conversation.tokens`` (events; what users were shown)."""
    deadletter_retention_ms: int = 30 * DAY_MS
    """Retention of ``conversation.deadletter`` (records no consumer could decode)."""
    answers_retention_ms: int = 7 * DAY_MS
    """Retention of ``conversation.answers``, the worker's prompt_id index: the idempotency window
    (a prompt_id submitted again after this long is answered again)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TopicSettings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            partitions=env_int(env, "TOKENLOG_TOPIC_PARTITIONS", d.partitions),
            replication_factor=env_int(env, "TOKENLOG_TOPIC_REPLICATION_FACTOR", d.replication_factor),
            min_insync_replicas=env_int(env, "TOKENLOG_TOPIC_MIN_INSYNC_REPLICAS", d.min_insync_replicas),
            prompts_retention_ms=env_int(env, "TOKENLOG_PROMPTS_RETENTION_MS", d.prompts_retention_ms),
            tokens_retention_ms=env_int(env, "TOKENLOG_TOKENS_RETENTION_MS", d.tokens_retention_ms),
            deadletter_retention_ms=env_int(
                env, "TOKENLOG_DEADLETTER_RETENTION_MS", d.deadletter_retention_ms
            ),
            answers_retention_ms=env_int(env, "TOKENLOG_ANSWERS_RETENTION_MS", d.answers_retention_ms),
        )


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how the local single-node KRaft broker runs."""

    home: Path = REPO_ROOT / ".local" / "kafka"
    """Broker home: ``data/`` (the log, kept across restarts), ``logs/``, ``server.properties``, pid."""
    port: int = 19092
    """Client listener on 127.0.0.1."""
    controller_port: int = 19093
    """KRaft controller listener on 127.0.0.1 (cannot be 0)."""
    heap: str = "512m"
    """Maximum JVM heap (``-Xmx``); the initial heap is half of it."""
    start_timeout_s: float = 120.0
    """How long ``start`` waits for the broker to answer a metadata request."""
    cache_dir: Path = REPO_ROOT / ".local" / "cache"
    """The resolved classpath and the JVM class-data archive, shared by every broker home."""
    auto_create_topics: bool = False
    """Off by default: a misspelt topic name fails instead of silently creating a topic."""
    security: str = "plaintext"
    """Client listener: ``plaintext``, or ``sasl_ssl`` (TLS with a CA made in the home at first
    start, and a SCRAM-SHA-512 user added when the storage is formatted)."""
    sasl_username: str = "tokenlog"
    """The SCRAM user of a ``sasl_ssl`` broker (``KAFKA_SASL_USERNAME``: the clients' own)."""
    sasl_password: str = field(default="", repr=False)
    """Its password (``KAFKA_SASL_PASSWORD``); empty: one made at first start, kept in the home."""
    proxied: tuple[tuple[int, int], ...] = ()
    """More client listeners for fault tests, each (port it binds, port it advertises). Clients
    that bootstrap at an advertised port (a fault proxy forwarding to the bound one) keep every
    connection to this broker on that listener, so the proxy can cut them off alone."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BrokerSettings:
        env = os.environ if env is None else env
        d = cls()
        home = env.get("TOKENLOG_KAFKA_HOME")
        cache = env.get("TOKENLOG_CACHE_DIR")
        return cls(
            home=Path(home).resolve() if home else d.home,
            cache_dir=Path(cache).resolve() if cache else d.cache_dir,
            port=env_int(env, "TOKENLOG_KAFKA_PORT", d.port),
            controller_port=env_int(env, "TOKENLOG_KAFKA_CONTROLLER_PORT", d.controller_port),
            heap=env_str(env, "TOKENLOG_KAFKA_HEAP", d.heap),
            start_timeout_s=env_float(env, "TOKENLOG_KAFKA_START_TIMEOUT_S", d.start_timeout_s),
            auto_create_topics=env_bool(env, "TOKENLOG_KAFKA_AUTO_CREATE_TOPICS", d.auto_create_topics),
            security=env_str(env, "TOKENLOG_KAFKA_SECURITY", d.security).lower(),
            sasl_username=env_str(env, "KAFKA_SASL_USERNAME", d.sasl_username),
            sasl_password=env_str(env, "KAFKA_SASL_PASSWORD", d.sasl_password),
        )

    def __post_init__(self) -> None:
        if self.security not in ("plaintext", "sasl_ssl"):
            raise ValueError(f"TOKENLOG_KAFKA_SECURITY must be plaintext or sasl_ssl, got {self.security!r}")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How ``make run`` supervises its services."""

    restarts: RestartPolicy = field(default_factory=RestartPolicy)
    """Backoff, reset and give-up rule for services that exit (``infra.restarts``)."""
    ready_timeout_s: float = 60.0
    """A service not ready this long after it started is stopped: a failed start."""
    log_dir: Path = REPO_ROOT / ".local" / "logs"
    """One log file per service (appended across restarts)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunSettings:
        env = os.environ if env is None else env
        d, r = cls(), RestartPolicy()
        log_dir = env.get("TOKENLOG_RUN_LOG_DIR")
        return cls(
            restarts=RestartPolicy(
                initial_s=env_float(env, "TOKENLOG_RUN_RESTART_INITIAL_S", r.initial_s),
                max_s=env_float(env, "TOKENLOG_RUN_RESTART_MAX_S", r.max_s),
                stable_s=env_float(env, "TOKENLOG_RUN_STABLE_S", r.stable_s),
                quick_exit_s=env_float(env, "TOKENLOG_RUN_QUICK_EXIT_S", r.quick_exit_s),
                max_failed_starts=env_int(env, "TOKENLOG_RUN_MAX_FAILED_STARTS", r.max_failed_starts),
            ),
            ready_timeout_s=env_float(env, "TOKENLOG_RUN_READY_TIMEOUT_S", d.ready_timeout_s),
            log_dir=Path(log_dir).resolve() if log_dir else d.log_dir,
        )


@dataclass(frozen=True, slots=True)
class InfraSettings:
    """Everything ``make run`` / ``make kafka-up`` / provisioning read from the environment."""

    bootstrap_servers: str | None = None
    """An existing cluster (``KAFKA_BOOTSTRAP_SERVERS``); when set, no local broker is started."""
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    run: RunSettings = field(default_factory=RunSettings)
    security: KafkaSecurity = PLAINTEXT
    """How clients reach ``KAFKA_BOOTSTRAP_SERVERS`` (a local broker says so itself:
    ``LocalBroker.client_security``)."""

    @property
    def uses_external_cluster(self) -> bool:
        return bool(self.bootstrap_servers)

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or self.broker.bootstrap

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InfraSettings:
        env = os.environ if env is None else env
        return cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            broker=BrokerSettings.from_env(env),
            topics=TopicSettings.from_env(env),
            run=RunSettings.from_env(env),
            security=KafkaSecurity.from_env(env),
        )
