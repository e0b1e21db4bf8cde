"""What ``make run`` hands its children: only the environment each needs, and the service credential."""

from __future__ import annotations

import stat
from pathlib import Path

from infra.services import child_env, service_token, services

PARENT = {
    "PATH": "/usr/bin",
    "HOME": "/home/dev",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "KAFKA_BOOTSTRAP_SERVERS": "elsewhere:9092",
    "TOKENLOG_TOPIC_PARTITIONS": "6",
    "TOKENLOG_LOG_EPOCH": "7",
    "TOKENLOG_SERVICE_TOKEN": "s" * 64,
    "TOKENLOG_GATEWAY_SECRET": "g" * 64,
    "TOKENLOG_GATEWAY_HOST": "127.0.0.1",
    "TOKENLOG_SESSIONS_STORE": "memory://",
    "TOKENLOG_WORKER_PROVIDER": "openai",
    "TOKENLOG_OPENAI_API_KEY": "sk-secret",
    "TOKENLOG_OPENAI_BASE_URL": "https://api.example/v1",
    "TOKENLOG_DEMO_TOKENS_PER_S": "50",
    "TOKENLOG_OPENAI_MODEL": "gpt-4o",
    "TOKENLOG_DEMO_MARKER_MAX_TOKENS": "500",
    "TOKENLOG_RUN_STABLE_S": "60",
    "HTTPS_PROXY": "http://proxy:3128",
    "AWS_SECRET_ACCESS_KEY": "not ours",
}


def _envs() -> dict[str, dict[str, str]]:
    return {spec.name: child_env(spec, PARENT) for spec in services("127.0.0.1:19092", PARENT)}


def test_only_the_worker_gets_the_provider_key_and_settings() -> None:
    envs = _envs()
    assert envs["worker"]["TOKENLOG_OPENAI_API_KEY"] == "sk-secret"
    assert envs["worker"]["TOKENLOG_WORKER_PROVIDER"] == "openai"
    assert not [k for k in envs["sessions"] if k.startswith(("TOKENLOG_OPENAI_", "TOKENLOG_WORKER_"))]
    # The gateway's model allowlist defaults to the worker's models: their names, nothing else.
    assert [k for k in envs["gateway"] if k.startswith(("TOKENLOG_OPENAI_", "TOKENLOG_WORKER_"))] == [
        "TOKENLOG_OPENAI_MODEL"
    ]
    for name in ("sessions", "gateway"):
        assert "HTTPS_PROXY" not in envs[name]
    assert envs["worker"]["HTTPS_PROXY"] == "http://proxy:3128"


def test_each_service_gets_its_own_settings_and_the_shared_ones_only() -> None:
    envs = _envs()
    assert envs["gateway"]["TOKENLOG_GATEWAY_HOST"] == "127.0.0.1"
    assert "TOKENLOG_GATEWAY_HOST" not in envs["sessions"]
    assert "TOKENLOG_GATEWAY_SECRET" not in envs["worker"]
    assert envs["sessions"]["TOKENLOG_SESSIONS_STORE"] == "memory://"
    assert "TOKENLOG_SESSIONS_STORE" not in envs["gateway"]
    for env in envs.values():
        assert env["PATH"] == "/usr/bin"
        assert env["LC_ALL"] == "C.UTF-8"
        assert env["PYTHONHASHSEED"] == "0"
        assert env["TOKENLOG_TOPIC_PARTITIONS"] == "6"
        assert env["TOKENLOG_LOG_EPOCH"] == "7"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"  # the spec's value wins
        assert "AWS_SECRET_ACCESS_KEY" not in env
        assert "TOKENLOG_RUN_STABLE_S" not in env


def test_every_service_gets_the_service_credential_from_the_environment_first() -> None:
    envs = _envs()
    assert {env["TOKENLOG_SERVICE_TOKEN"] for env in envs.values()} == {"s" * 64}


def test_the_service_token_is_made_once_private_and_random(tmp_path: Path) -> None:
    path = tmp_path / ".local" / "service-token"
    token = service_token(path)
    assert len(token) >= 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert service_token(path) == token
    assert service_token(tmp_path / "other") != token


def test_the_snapshot_url_line_says_it_needs_the_service_credential() -> None:
    [sessions] = [s for s in services("127.0.0.1:19092", PARENT) if s.name == "sessions"]
    assert "service credential" in sessions.urls["session snapshots"]


def test_the_gateway_checks_prompts_against_the_workers_models_and_marker_caps() -> None:
    from gateway.settings import GatewaySettings

    gateway = GatewaySettings.from_env(_envs()["gateway"])
    assert "gpt-4o" in gateway.models
    assert gateway.markers.max_tokens == 500
