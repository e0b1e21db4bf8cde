from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import InfraSettings


def test_defaults_use_the_local_broker() -> None:
    settings = InfraSettings.from_env({})
    assert not settings.uses_external_cluster
    assert settings.bootstrap == "127.0.0.1:19092"
    assert settings.topics.partitions == 12


def test_kafka_bootstrap_servers_selects_an_existing_cluster() -> None:
    settings = InfraSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "10.0.0.1:9092,10.0.0.2:9092"})
    assert settings.uses_external_cluster
    assert settings.bootstrap == "10.0.0.1:9092,10.0.0.2:9092"


def test_prefixed_variables_override_ports_home_and_partitions(tmp_path: Path) -> None:
    settings = InfraSettings.from_env(
        {
            "TOKENLOG_KAFKA_PORT": "29092",
            "TOKENLOG_KAFKA_CONTROLLER_PORT": "29093",
            "TOKENLOG_KAFKA_HOME": str(tmp_path),
            "TOKENLOG_TOPIC_PARTITIONS": "4",
        }
    )
    assert settings.broker.bootstrap == "127.0.0.1:29092"
    assert settings.broker.controller_port == 29093
    assert settings.broker.home == tmp_path
    assert settings.topics.partitions == 4


def test_a_malformed_number_names_the_variable() -> None:
    with pytest.raises(ValueError, match="TOKENLOG_TOPIC_PARTITIONS must be an integer"):
        InfraSettings.from_env({"TOKENLOG_TOPIC_PARTITIONS": "twelve"})
