"""Settings of the session-state app, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from infra.env import env_int, env_str


@dataclass(frozen=True, slots=True)
class SessionsSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    app_id: str = "tokenlog-sessions"
    """Faust application id: the consumer group and the prefix of the changelog topics."""
    store: str = "memory://"
    """``memory://`` (rebuilt from the changelog at start) or ``rocksdb://`` (kept on disk)."""
    data_dir: str = ".local/sessions"
    partitions: int = 12
    """Must equal the partition count of the topics (co-partitioned tables)."""
    replication_factor: int = 1
    web_host: str = "127.0.0.1"
    web_port: int = 18082
    max_turns: int = 50
    epoch: str = ""
    """The log epoch of cursors; empty: the Kafka cluster id."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SessionsSettings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            bootstrap_servers=env_str(env, "KAFKA_BOOTSTRAP_SERVERS", d.bootstrap_servers),
            app_id=env_str(env, "TOKENLOG_SESSIONS_APP_ID", d.app_id),
            store=env_str(env, "TOKENLOG_SESSIONS_STORE", d.store),
            data_dir=env_str(env, "TOKENLOG_SESSIONS_DATA_DIR", d.data_dir),
            partitions=env_int(env, "TOKENLOG_TOPIC_PARTITIONS", d.partitions),
            replication_factor=env_int(env, "TOKENLOG_TOPIC_REPLICATION_FACTOR", d.replication_factor),
            web_host=env_str(env, "TOKENLOG_SESSIONS_HOST", d.web_host),
            web_port=env_int(env, "TOKENLOG_SESSIONS_PORT", d.web_port),
            max_turns=env_int(env, "TOKENLOG_SESSIONS_MAX_TURNS", d.max_turns),
            epoch=env_str(env, "TOKENLOG_LOG_EPOCH", d.epoch),
        )
