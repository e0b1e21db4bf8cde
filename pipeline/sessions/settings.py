"""Settings of the session-state app, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from infra.env import env_float, env_int, env_str


@dataclass(frozen=True, slots=True)
class SessionsSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    app_id: str = "tokenlog-sessions"
    """Faust application id: the consumer group and the prefix of the changelog topics."""
    store: str = "rocksdb://"
    """``memory://`` (rebuilt from the changelog at start) or ``rocksdb://`` (kept on disk)."""
    data_dir: str = ".local/sessions"
    partitions: int = 12
    """Partitions of the tables; ``run`` sets it to the topics' own count (co-partitioning)."""
    replication_factor: int = 1
    web_host: str = "127.0.0.1"
    web_port: int = 18082
    max_turns: int = 50
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SessionsSettings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            bootstrap_servers=env_str(env, "KAFKA_BOOTSTRAP_SERVERS", d.bootstrap_servers),
            app_id=env_str(env, "TOKENLOG_SESSIONS_APP_ID", d.app_id),
            store=env_str(env, "TOKENLOG_SESSIONS_STORE", d.store),
            data_dir=env_str(env, "TOKENLOG_SESSIONS_DATA_DIR", d.data_dir),
            replication_factor=env_int(env, "TOKENLOG_TOPIC_REPLICATION_FACTOR", d.replication_factor),
            web_host=env_str(env, "TOKENLOG_SESSIONS_HOST", d.web_host),
            web_port=env_int(env, "TOKENLOG_SESSIONS_PORT", d.web_port),
            max_turns=env_int(env, "TOKENLOG_SESSIONS_MAX_TURNS", d.max_turns),
            window_s=env_int(env, "TOKENLOG_SESSIONS_WINDOW_S", d.window_s),
            session_timeout_s=env_float(env, "TOKENLOG_SESSIONS_SESSION_TIMEOUT_S", d.session_timeout_s),
            epoch=env_str(env, "TOKENLOG_LOG_EPOCH", d.epoch),
            rocksdb_write_buffer_mb=env_int(
                env, "TOKENLOG_SESSIONS_ROCKSDB_WRITE_BUFFER_MB", d.rocksdb_write_buffer_mb
            ),
            rocksdb_block_cache_mb=env_int(
                env, "TOKENLOG_SESSIONS_ROCKSDB_BLOCK_CACHE_MB", d.rocksdb_block_cache_mb
            ),
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
