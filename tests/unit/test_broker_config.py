from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.broker import jvm_flags, new_cluster_id, render_properties, server_properties
from infra.settings import BrokerSettings


def test_single_node_properties_make_groups_and_transactions_work_on_one_broker(tmp_path: Path) -> None:
    props = server_properties(BrokerSettings(port=1234, controller_port=1235), tmp_path / "data")
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:1235"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1234"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_listeners_bind_loopback_only(tmp_path: Path) -> None:
    props = server_properties(BrokerSettings(), tmp_path)
    hosts = re.findall(r"//([^:]+):", props["listeners"])
    assert hosts
    assert set(hosts) == {"127.0.0.1"}


def test_rendered_properties_are_key_value_lines(tmp_path: Path) -> None:
    text = render_properties(server_properties(BrokerSettings(), tmp_path))
    assert all(re.fullmatch(r"[a-z0-9.]+=\S+", line) for line in text.splitlines())


def test_cluster_ids_are_22_char_base64url_not_starting_with_dash() -> None:
    for _ in range(500):
        cid = new_cluster_id()
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid)
        assert not cid.startswith("-")


@pytest.mark.parametrize(
    ("heap", "xmx", "xms"), [("512m", "-Xmx512m", "-Xms256m"), ("1g", "-Xmx1024m", "-Xms512m")]
)
def test_jvm_flags_bound_the_heap_and_use_a_small_box_gc(
    heap: str, xmx: str, xms: str, tmp_path: Path
) -> None:
    flags = jvm_flags(BrokerSettings(heap=heap), tmp_path / "a.jsa", dump_archive=False)
    assert xmx in flags
    assert xms in flags
    assert "-XX:+UseSerialGC" in flags
    assert f"-XX:SharedArchiveFile={tmp_path / 'a.jsa'}" in flags


def test_jvm_flags_dump_a_class_archive_on_first_run(tmp_path: Path) -> None:
    flags = jvm_flags(BrokerSettings(), tmp_path / "a.jsa", dump_archive=True)
    assert f"-XX:ArchiveClassesAtExit={tmp_path / 'a.jsa'}" in flags


def test_a_malformed_heap_is_refused() -> None:
    with pytest.raises(ValueError, match="heap must look like"):
        jvm_flags(BrokerSettings(heap="lots"), None, dump_archive=False)
