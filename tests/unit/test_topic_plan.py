from __future__ import annotations

import pytest

from infra.errors import TopicMismatchError
from infra.settings import TopicSettings
from infra.topics import TopicState, plan, topic_specs
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC


def test_prompts_and_tokens_are_co_partitioned_with_configurable_count() -> None:
    specs = {s.name: s for s in topic_specs(TopicSettings(partitions=7))}
    assert specs[PROMPTS_TOPIC].partitions == specs[TOKENS_TOPIC].partitions == 7
    assert specs[TOKENS_TOPIC].configs["cleanup.policy"] == "delete"


def test_default_partition_count_is_twelve() -> None:
    assert {s.partitions for s in topic_specs(TopicSettings())} == {12}


def test_plan_creates_only_missing_topics() -> None:
    specs = topic_specs(TopicSettings())
    existing = {PROMPTS_TOPIC: TopicState(PROMPTS_TOPIC, 12, dict(specs[0].configs))}
    todo = plan(specs, existing)
    assert [s.name for s in todo.create] == [s.name for s in specs[1:]]
    assert todo.unchanged == (PROMPTS_TOPIC,)
    assert todo.align == ()


def test_plan_aligns_drifted_retention_but_never_partitions() -> None:
    specs = topic_specs(TopicSettings())
    drifted = {**specs[1].configs, "retention.ms": "1"}
    todo = plan(specs, {TOKENS_TOPIC: TopicState(TOKENS_TOPIC, 12, drifted)})
    assert [s.name for s in todo.align] == [TOKENS_TOPIC]


def test_plan_refuses_a_topic_with_another_partition_count_naming_it() -> None:
    specs = topic_specs(TopicSettings(partitions=12))
    with pytest.raises(TopicMismatchError, match=r"conversation\.tokens: has 6 partitions, spec says 12"):
        plan(specs, {TOKENS_TOPIC: TopicState(TOKENS_TOPIC, 6, {})})


def test_a_topic_is_visible_only_with_every_partition_in_the_metadata() -> None:
    from infra.topics import TopicSpec, not_yet_visible

    specs = [TopicSpec("a", 4, 1), TopicSpec("b", 4, 1), TopicSpec("c", 4, 1)]
    assert not_yet_visible(specs, {"a": 4, "b": 2}) == ["b (2/4 partitions)", "c (0/4 partitions)"]
    assert not_yet_visible(specs, {"a": 4, "b": 4, "c": 4}) == []
