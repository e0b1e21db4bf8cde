"""The system unchanged on a three-broker cluster (replication 3, min.insync.replicas 2): the
leader of a busy partition SIGKILLed under load; clients keep streaming on that partition and no
acknowledged token is lost (the log checker reads every answer back, as in every chaos
scenario)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from infra.broker import LocalCluster
from infra.settings import TopicSettings
from infra.topics import ensure, topic_specs
from schemas.registry import TOKENS_TOPIC
from tests.chaos.conftest import ROWS
from tests.chaos.scenarios import UNAVAILABLE, on_partition
from tests.chaos.test_chaos import fresh_seed
from tests.chaos.world import Plan, Run, Scenario, World, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(tmp / "kafka", size=3)
    cluster.start()
    try:
        topics = TopicSettings(replication_factor=3, min_insync_replicas=2)
        asyncio.run(ensure(cluster.bootstrap, topic_specs(topics)))
        world = World.start(
            cluster.bootstrap, tmp, cluster=cluster, env={"TOKENLOG_TOPIC_REPLICATION_FACTOR": "3"}
        )
        try:
            yield world
        finally:
            world.stop()
    finally:
        cluster.stop()


async def leader_of(bootstrap: str, topic: str, partition: int) -> tuple[int, list[int]]:
    """(leader, in-sync replicas) of one partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        info = next(p for p in described["partitions"] if p["partition"] == partition)
        return int(info["leader"]), [int(n) for n in info["isr"]]
    finally:
        await admin.close()


async def leader_killed(r: Run) -> None:
    cluster = r.world.cluster
    assert cluster is not None
    await r.streaming(30)
    streaming = r.streaming_conversations()
    assert streaming, "no answer is streaming"
    partition = r.partitions[streaming[0]]
    leader, isr = await leader_of(cluster.bootstrap, TOKENS_TOPIC, partition)
    assert len(isr) == 3, f"partition {partition} has only {isr} in sync"
    print(f"killing node {leader}, leader of {TOKENS_TOPIC}[{partition}]")
    r.strike(f"node {leader} SIGKILL (leader of {TOKENS_TOPIC}[{partition}])")
    await asyncio.to_thread(cluster.node(leader).kill)
    # the answers on that partition go on, on its new leader
    await r.streaming(60, timeout_s=120, conversations=on_partition(r, partition))
    for _ in range(60):  # the controller moves leadership once the node's session expires
        if (await leader_of(cluster.bootstrap, TOKENS_TOPIC, partition))[0] != leader:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"node {leader} still leads {TOKENS_TOPIC}[{partition}]")
    await asyncio.to_thread(cluster.node(leader).start)


def test_the_leader_of_a_busy_partition_killed_under_load_loses_nothing(cluster_world: World) -> None:
    seed = fresh_seed()
    print(f"chaos leader_killed: seed {seed} (replay: TOKENLOG_CHAOS_SEED={seed})")
    scenario = Scenario(leader_killed, UNAVAILABLE, prompts=3)
    result = asyncio.run(run(cluster_world, "leader_killed", scenario, Plan(), seed))
    ROWS.append(result.row())
    print(f"chaos leader_killed: {result.row()} in {result.seconds} s")
    assert result.tally.clean, f"seed {seed}:\n" + "\n".join(result.tally.details)
    assert result.tally.events_checked > 0
