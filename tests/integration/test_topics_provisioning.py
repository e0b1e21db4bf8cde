"""Provisioning against the real broker: idempotent, config-aligning, refusing mismatches."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.broker import LocalCluster
from infra.errors import TopicMismatchError
from infra.process import ManagedProcess
from infra.topics import TopicSpec, describe, describe_when_visible, ensure
from tests.harness import create_topic, unique

pytestmark = pytest.mark.integration


def _spec(name: str, partitions: int = 4, retention_ms: int = 86_400_000) -> TopicSpec:
    return TopicSpec(name, partitions, 1, {"cleanup.policy": "delete", "retention.ms": str(retention_ms)})


async def test_ensure_creates_once_and_is_idempotent(bootstrap: str) -> None:
    specs = (_spec(unique("t.prompts")), _spec(unique("t.tokens")))
    first = await ensure(bootstrap, specs)
    assert {s.name for s in first.create} == {s.name for s in specs}
    second = await ensure(bootstrap, specs)
    assert second.create == ()
    assert set(second.unchanged) == {s.name for s in specs}
    state = await describe(bootstrap, [s.name for s in specs])
    assert {n: s.partitions for n, s in state.items()} == {s.name: 4 for s in specs}
    assert all(s.configs["retention.ms"] == "86400000" for s in state.values())


async def test_ensure_aligns_a_drifted_retention(bootstrap: str) -> None:
    name = unique("t.drift")
    await ensure(bootstrap, [_spec(name, retention_ms=1000)])
    todo = await ensure(bootstrap, [_spec(name, retention_ms=7200000)])
    assert [s.name for s in todo.align] == [name]
    assert (await describe(bootstrap, [name]))[name].configs["retention.ms"] == "7200000"


async def test_ensure_refuses_an_existing_topic_with_another_partition_count(bootstrap: str) -> None:
    name = await create_topic(bootstrap, unique("t.mismatch"), partitions=2)
    with pytest.raises(TopicMismatchError, match="has 2 partitions, spec says 4"):
        await ensure(bootstrap, [_spec(name, partitions=4)])
    assert (await describe(bootstrap, [name]))[name].partitions == 2


async def test_shared_partition_count_names_missing_and_mismatched_topics(bootstrap: str) -> None:
    from infra.topics import shared_partition_count

    a = await create_topic(bootstrap, unique("t.a"), partitions=3)
    b = await create_topic(bootstrap, unique("t.b"), partitions=3)
    c = await create_topic(bootstrap, unique("t.c"), partitions=2)
    assert await shared_partition_count(bootstrap, (a, b)) == 3
    with pytest.raises(TopicMismatchError, match="not co-partitioned"):
        await shared_partition_count(bootstrap, (a, c))
    with pytest.raises(TopicMismatchError, match="topics missing"):
        await shared_partition_count(bootstrap, (a, unique("t.never")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three brokers of their own: after a create, each learns the new topics from the quorum on
    its own time, so the metadata a client asks for may not show them yet."""
    nodes = LocalCluster(tmp_path_factory.mktemp("cluster") / "kafka", size=3)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def every_core_busy(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    """One busy-looping process per core (a loaded CI box or laptop), each ended by its PID."""
    spinners = [
        ManagedProcess(f"spin-{i}", [sys.executable, "-c", "while True: pass"], tmp_path / f"spin-{i}.log")
        for i in range(os.cpu_count() or 1)
    ]
    try:
        for spinner in spinners:
            spinner.start()
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()


def test_ensure_waits_until_created_topics_show_in_the_metadata_with_every_core_busy(
    cluster: LocalCluster, every_core_busy: list[ManagedProcess]
) -> None:
    for _ in range(3):  # without the wait, 5 runs of 6 failed with "topics still missing"
        specs = [TopicSpec(unique(f"t.busy{i}"), 12, 3, {"cleanup.policy": "delete"}) for i in range(4)]
        todo = asyncio.run(ensure(cluster.bootstrap, specs))
        assert {s.name for s in todo.create} == {s.name for s in specs}
        # Another broker of the cluster may learn them later still: ask as ensure does, bounded.
        state = asyncio.run(describe_when_visible(cluster.bootstrap, specs, 30))
        assert {n: s.partitions for n, s in state.items()} == {s.name: 12 for s in specs}
    assert all(spinner.running() for spinner in every_core_busy), "the load went away during the test"
