"""Settings of the session-state app, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra.env import env_float, env_int, env_str
from infra.kafka_client import PLAINTEXT, KafkaSecurity


@dataclass(frozen=True, slots=True)
class SessionsSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    kafka_security: KafkaSecurity = PLAINTEXT
    """TLS and SASL of every Kafka client, Faust's included (``KAFKA_SECURITY_PROTOCOL``)."""
    app_id: str = "tokenlog-sessions"
    """Faust application id: the consumer group and the prefix of the changelog topics."""
    store: str = "rocksdb://"
    """``memory://`` (rebuilt from the changelog at start) or ``rocksdb://`` (kept on disk)."""
    data_dir: str = ".local/sessions"
    partitions: int = 12
    """Partitions of the tables; ``run`` sets it to the topics' own count (co-partitioning)."""
    replication_factor: int = 1
    web_host: str = "127.0.0.1"
    """The address the web server binds to and other workers of the app reach it at (loopback
    by default; a deployment sets the pod's address)."""
    web_port: int = 18082
    service_token: str = field(default="", repr=False)
    """The service credential every web request must bear (``Authorization: Bearer <token>``):
    the gateway's, shared by the app's workers (Faust forwards it when it routes a request to
    the worker that holds the key). At least 32 bytes; the app does not start without it."""
    max_turns: int = 50
    max_snapshot_chars: int = 8_000_000
    """A snapshot's finished turns are the newest whose prompt and answer texts fit in this many
    characters together; older ones are counted in ``dropped_turns`` (the live answer is whole)."""
    max_value_bytes: int = 512 * 1024
    """A table value larger than this is not stored (logged with its key, counted) instead of
    failing the changelog write: none is, as texts are kept in pieces (``texts.py``)."""
    producer_max_request_size: int = 1024 * 1024
    """The changelog producer's request limit (Faust's default is 1,000,000 bytes), at the
    broker's own message limit (``message.max.bytes``, 1,048,588) less the batch overhead."""
    window_s: int = 60
    """Width of the usage analytics' tumbling windows."""
    session_timeout_s: float = 10.0
    """Kafka group session timeout: how long a killed worker's partitions wait before another
    takes them (Faust's default of 60 s makes a restart after SIGKILL wait a minute)."""
    epoch: str = ""
    """The log epoch of cursors; empty: the Kafka cluster id."""
    rocksdb_write_buffer_mb: int = 2
    """RocksDB memtable size per table partition (Faust's default is 64 MiB, three of them): every
    token rewrites a session, and the soak showed the memtables of 24 table partitions filling
    toward gigabytes."""
    rocksdb_block_cache_mb: int = 8
    """RocksDB block cache per table partition (Faust's default: 2 GiB, plus 500 MiB compressed)."""

    fetch_min_bytes: int = 64 * 1024
    """The consumer asks the broker for at least this much per fetch (``kafka.py``)..."""
    fetch_max_wait_ms: int = 50
    """...or to answer after this long: the snapshot trails the log by up to this much, and the
    app makes a fetch request per batch instead of one per token."""
    batch_events: int = 5000
    batch_ms: int = 500
    """Tokens are applied in batches of up to ``batch_events`` or what arrived within ``batch_ms``:
    each conversation's state is written once per batch, not once per token (at 10,000 tokens/s,
    0.76 cores with 200 ms, 0.66 with 500)."""
    nice: int = 10
    """CPU priority below the services on a client's path (``infra.priority``): the app is
    background work (a new device's snapshot tolerates a lag the gateway splices over), so on a
    busy shared machine the broker and the gateway run first. 0 leaves it as started."""
    producer_linger_ms: int = 20
    """How long a table write waits for others to share its changelog request (one request per
    token before)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SessionsSettings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            bootstrap_servers=env_str(env, "KAFKA_BOOTSTRAP_SERVERS", d.bootstrap_servers),
            kafka_security=KafkaSecurity.from_env(env),
            app_id=env_str(env, "TOKENLOG_SESSIONS_APP_ID", d.app_id),
            store=env_str(env, "TOKENLOG_SESSIONS_STORE", d.store),
            data_dir=env_str(env, "TOKENLOG_SESSIONS_DATA_DIR", d.data_dir),
            replication_factor=env_int(env, "TOKENLOG_TOPIC_REPLICATION_FACTOR", d.replication_factor),
            web_host=env_str(env, "TOKENLOG_SESSIONS_HOST", d.web_host),
            web_port=env_int(env, "TOKENLOG_SESSIONS_PORT", d.web_port),
            service_token=env_str(env, "TOKENLOG_SERVICE_TOKEN", d.service_token),
            max_turns=env_int(env, "TOKENLOG_SESSIONS_MAX_TURNS", d.max_turns),
            max_snapshot_chars=env_int(env, "TOKENLOG_SESSIONS_MAX_SNAPSHOT_CHARS", d.max_snapshot_chars),
            max_value_bytes=env_int(env, "TOKENLOG_SESSIONS_MAX_VALUE_BYTES", d.max_value_bytes),
            window_s=env_int(env, "TOKENLOG_SESSIONS_WINDOW_S", d.window_s),
            session_timeout_s=env_float(env, "TOKENLOG_SESSIONS_SESSION_TIMEOUT_S", d.session_timeout_s),
            epoch=env_str(env, "TOKENLOG_LOG_EPOCH", d.epoch),
            rocksdb_write_buffer_mb=env_int(
                env, "TOKENLOG_SESSIONS_ROCKSDB_WRITE_BUFFER_MB", d.rocksdb_write_buffer_mb
            ),
            rocksdb_block_cache_mb=env_int(
                env, "TOKENLOG_SESSIONS_ROCKSDB_BLOCK_CACHE_MB", d.rocksdb_block_cache_mb
            ),
            fetch_min_bytes=env_int(env, "TOKENLOG_SESSIONS_FETCH_MIN_BYTES", d.fetch_min_bytes),
            fetch_max_wait_ms=env_int(env, "TOKENLOG_SESSIONS_FETCH_MAX_WAIT_MS", d.fetch_max_wait_ms),
            batch_events=env_int(env, "TOKENLOG_SESSIONS_BATCH_EVENTS", d.batch_events),
            batch_ms=env_int(env, "TOKENLOG_SESSIONS_BATCH_MS", d.batch_ms),
            producer_linger_ms=env_int(env, "TOKENLOG_SESSIONS_PRODUCER_LINGER_MS", d.producer_linger_ms),
            nice=env_int(env, "TOKENLOG_SESSIONS_NICE", d.nice),
        )

    def check(self) -> None:
        """Refuse settings the app cannot run safely with."""
        if len(self.service_token.encode()) < 32:
            raise ValueError(
                "TOKENLOG_SERVICE_TOKEN must be set to at least 32 bytes: the service credential "
                "the gateway sends (make run makes one in .local/service-token)"
            )

    def table_options(self) -> dict[str, int]:
        """RocksDB options of every table partition (ignored by the memory store)."""
        if not self.store.startswith("rocksdb"):
            return {}
        mib = 1024 * 1024
        return {
            "write_buffer_size": self.rocksdb_write_buffer_mb * mib,
            "max_write_buffer_number": 2,
            "target_file_size_base": 8 * mib,
            "block_cache_size": self.rocksdb_block_cache_mb * mib,
            "block_cache_compressed_size": 0,
        }
