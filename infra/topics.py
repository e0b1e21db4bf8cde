"""The pipeline's topics, declared in one place, and their idempotent provisioning.

Usage::

    python -m infra.topics ensure     # create what is missing, align configs, refuse mismatches
    python -m infra.topics list       # what exists, with partitions and the managed configs

Every topic is keyed by ``conversation_id``. ``conversation.prompts`` and
``conversation.tokens`` have the same partition count (co-partitioned), so one
conversation's commands and events live in partitions with the same number. A topic that
already exists with a different partition count is never changed: adding partitions would
move conversations to other partitions and break every stored cursor, so provisioning stops
with ``TopicMismatchError`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.broker import client_security
from infra.errors import InfraError, TopicMismatchError
from infra.kafka_client import PLAINTEXT, KafkaSecurity, diagnose
from infra.settings import InfraSettings, TopicSettings
from schemas.registry import ANSWERS_TOPIC, DEADLETTER_TOPIC, OWNERS_TOPIC, PROMPTS_TOPIC, TOKENS_TOPIC


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """What a topic must look like."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    """Topic-level configs the project manages; others are left to the cluster's defaults."""


@dataclass(frozen=True, slots=True)
class TopicState:
    """What a topic looks like on the cluster."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``ensure`` will do: create missing topics, align drifted configs."""

    create: tuple[TopicSpec, ...]
    align: tuple[TopicSpec, ...]
    unchanged: tuple[str, ...]


def topic_specs(settings: TopicSettings) -> tuple[TopicSpec, ...]:
    """Every topic the pipeline needs. Faust's changelog topics are declared by Faust itself."""

    def common(retention_ms: int) -> dict[str, str]:
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(retention_ms),
            "min.insync.replicas": str(settings.min_insync_replicas),
        }

    return (
        # The broker stamps each record with the time it appended it (LogAppendTime): timestamps
        # rise with offsets, so "the log as it stood at T" is an exact offset prefix and
        # offsets-for-times finds time-range boundaries without skipping an event (replay).
        TopicSpec(
            PROMPTS_TOPIC,
            settings.partitions,
            settings.replication_factor,
            {**common(settings.prompts_retention_ms), "message.timestamp.type": "LogAppendTime"},
        ),
        TopicSpec(
            TOKENS_TOPIC,
            settings.partitions,
            settings.replication_factor,
            {**common(settings.tokens_retention_ms), "message.timestamp.type": "LogAppendTime"},
        ),
        TopicSpec(
            DEADLETTER_TOPIC,
            settings.partitions,
            settings.replication_factor,
            common(settings.deadletter_retention_ms),
        ),
        # The worker's prompt_id index: the latest entry per prompt, forgotten after the window.
        TopicSpec(
            ANSWERS_TOPIC,
            settings.partitions,
            settings.replication_factor,
            {**common(settings.answers_retention_ms), "cleanup.policy": "compact,delete"},
        ),
        # The worker's owner of each conversation: kept as long as the conversation (compact only;
        # a conversation that lost its owner record could be claimed by another user).
        TopicSpec(
            OWNERS_TOPIC,
            settings.partitions,
            settings.replication_factor,
            {"cleanup.policy": "compact", "min.insync.replicas": str(settings.min_insync_replicas)},
        ),
    )


def plan(specs: Iterable[TopicSpec], existing: Mapping[str, TopicState]) -> Plan:
    """Compare specs with the cluster. Raises ``TopicMismatchError`` listing every topic whose
    partition count differs (nothing is changed then)."""
    specs = tuple(specs)
    mismatched = [
        f"{s.name}: has {existing[s.name].partitions} partitions, spec says {s.partitions}"
        for s in specs
        if s.name in existing and existing[s.name].partitions != s.partitions
    ]
    if mismatched:
        raise TopicMismatchError(
            "existing topics differ in partition count; refusing to continue, because changing "
            "it would re-route conversations (delete the topics or set TOKENLOG_TOPIC_PARTITIONS "
            "to match):\n  " + "\n  ".join(mismatched)
        )
    create = tuple(s for s in specs if s.name not in existing)
    align = tuple(
        s
        for s in specs
        if s.name in existing and any(existing[s.name].configs.get(k) != v for k, v in s.configs.items())
    )
    unchanged = tuple(s.name for s in specs if s.name in existing and s not in align)
    return Plan(create=create, align=align, unchanged=unchanged)


# --------------------------------------------------------------------------- I/O


async def describe(
    bootstrap: str, names: Iterable[str] | None = None, security: KafkaSecurity = PLAINTEXT
) -> dict[str, TopicState]:
    """Partitions and configs of topics on the cluster (all non-internal topics by default)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=15000, **security.client_kwargs()
    )
    await _start(admin, bootstrap, security)
    try:
        metadata = await admin.describe_topics(list(names) if names is not None else None)
        found = {
            t["topic"]: len(t["partitions"])
            for t in metadata
            if t["error_code"] == 0 and not t.get("is_internal", False)
        }
        configs: dict[str, dict[str, str]] = {name: {} for name in found}
        if found:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name) for name in found]
            )
            for response in responses:
                for resource in response.to_object()["resources"]:
                    configs[resource["resource_name"]] = {
                        entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
                    }
        return {name: TopicState(name, n, configs[name]) for name, n in found.items()}
    finally:
        await admin.close()


ENSURE_WAIT_S = 30.0
"""How long ``ensure`` waits for the topics it created to show in the metadata."""


async def _start(admin: Any, bootstrap: str, security: KafkaSecurity) -> None:
    """``admin.start()``; a refused credential is a ``KafkaAuthenticationError`` saying so."""
    from aiokafka.errors import KafkaConnectionError

    try:
        await admin.start()
    except KafkaConnectionError:
        await diagnose(bootstrap, security)
        raise


async def ensure(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    security: KafkaSecurity = PLAINTEXT,
    *,
    wait_s: float = ENSURE_WAIT_S,
) -> Plan:
    """Create missing topics and align managed configs; idempotent and safe to race. Returns once
    every created topic is in the metadata with all its partitions (up to ``wait_s``)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    specs = tuple(specs)
    todo = plan(specs, await describe(bootstrap, [s.name for s in specs], security))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=30000, **security.client_kwargs()
    )
    await _start(admin, bootstrap, security)
    try:
        if todo.create:
            response = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
                    for s in todo.create
                ]
            )
            for name, code, *rest in response.topic_errors:
                error = for_code(code)
                if code and error is not TopicAlreadyExistsError:
                    raise InfraError(f"could not create {name}: {error.__name__} {rest}")
        if todo.align:
            for response in await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name, dict(s.configs)) for s in todo.align]
            ):
                for code, message, _type, name in response.resources:
                    if code:
                        raise InfraError(f"could not alter {name}: {for_code(code).__name__} {message}")
    finally:
        await admin.close()
    # A topic created concurrently by someone else must still match the spec.
    after = await describe_when_visible(bootstrap, specs, wait_s, security)
    plan(specs, after)
    return todo


def not_yet_visible(specs: Iterable[TopicSpec], seen: Mapping[str, int]) -> list[str]:
    """The specs' topics that metadata showing ``seen`` (name -> partition count) does not show
    yet with all their partitions, each with what it shows."""
    return [
        f"{s.name} ({seen.get(s.name, 0)}/{s.partitions} partitions)"
        for s in specs
        if seen.get(s.name, 0) < s.partitions
    ]


async def describe_when_visible(
    bootstrap: str, specs: Iterable[TopicSpec], timeout_s: float, security: KafkaSecurity = PLAINTEXT
) -> dict[str, TopicState]:
    """``describe`` the specs' topics once the metadata shows each with all its partitions, polling
    with short pauses doubling up to 0.5 s. ``create_topics`` returns once the controller has
    accepted the topics; a broker under load shows them in its metadata some time later (issue 21,
    item 11: with every core busy, ``describe`` right after the create missed them). After
    ``timeout_s``, ``InfraError`` naming what is still missing."""
    specs = tuple(specs)
    names = [s.name for s in specs]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pause = 0.02
    while True:
        found = await describe(bootstrap, names, security)
        missing = not_yet_visible(specs, {name: state.partitions for name, state in found.items()})
        if not missing:
            return found
        if loop.time() >= deadline:
            raise InfraError(f"topics still missing {timeout_s:g}s after create: {', '.join(missing)}")
        await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
        pause = min(pause * 2, 0.5)


def partition_for(conversation_id: str, partitions: int) -> int:
    """The partition every producer's default partitioner (murmur2 of the key, as Java's) puts a
    conversation in, among ``partitions``."""
    from aiokafka.partitioner import murmur2

    return int(murmur2(conversation_id.encode()) & 0x7FFFFFFF) % partitions


async def shared_partition_count(
    bootstrap: str, names: Iterable[str], security: KafkaSecurity = PLAINTEXT
) -> int:
    """The one partition count of ``names``; ``TopicMismatchError`` naming what to do when a topic
    is missing or they are not co-partitioned."""
    names = tuple(names)
    found = await describe(bootstrap, list(names), security)
    missing = [n for n in names if n not in found]
    if missing:
        raise TopicMismatchError(
            f"topics missing: {missing}; create them with `python -m infra.topics ensure`"
        )
    counts = {n: found[n].partitions for n in names}
    if len(set(counts.values())) != 1:
        raise TopicMismatchError(f"topics are not co-partitioned (same partition count): {counts}")
    return counts[names[0]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.topics")
    parser.add_argument("command", choices=["ensure", "list"])
    args = parser.parse_args(argv)
    settings = InfraSettings.from_env()
    bootstrap = settings.bootstrap
    security = client_security(settings)
    try:
        if args.command == "ensure":
            todo = asyncio.run(ensure(bootstrap, topic_specs(settings.topics), security))
            for s in todo.create:
                print(f"created   {s.name} ({s.partitions} partitions, rf {s.replication_factor})")
            for s in todo.align:
                print(f"aligned   {s.name} configs {dict(s.configs)}")
            for name in todo.unchanged:
                print(f"unchanged {name}")
        else:
            managed = {s.name: s for s in topic_specs(settings.topics)}
            states = asyncio.run(describe(bootstrap, security=security))
            print(f"{'topic':40} {'partitions':>10}  configs")
            for name in sorted(states):
                state = states[name]
                keys = managed[name].configs if name in managed else ("cleanup.policy", "retention.ms")
                shown = {k: state.configs.get(k) for k in keys}
                print(f"{name:40} {state.partitions:>10}  {shown}")
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
