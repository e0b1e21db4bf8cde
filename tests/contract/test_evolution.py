"""Schema evolution: every current schema reads every released version and vice versa."""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import pytest

from schemas.codec import MAGIC, TOKENS, TopicCodec
from schemas.compat import check_pair, check_topic
from schemas.records import TokenDelta, TokenEvent
from schemas.registry import TOPICS, current, history, schema_fingerprint, strip_logical_types


@pytest.mark.parametrize("topic", TOPICS)
def test_current_schema_is_compatible_both_ways_with_every_released_version(topic: str) -> None:
    assert history(topic), f"{topic} has no released version under schemas/history"
    assert check_topic(topic) == []


@pytest.mark.parametrize("topic", TOPICS)
def test_producers_only_write_with_a_released_schema(topic: str) -> None:
    """Consumers find writer schemas by fingerprint among released versions: an unreleased
    current schema would make every record unreadable to them."""
    released = {v.fingerprint for v in history(topic)}
    assert current(topic).fingerprint in released


@pytest.mark.parametrize("topic", TOPICS)
def test_every_field_is_documented(topic: str) -> None:
    def walk(schema: Any, where: str) -> list[str]:
        missing = []
        if isinstance(schema, dict):
            for f in schema.get("fields", []):
                if not f.get("doc"):
                    missing.append(f"{where}.{f['name']}")
                missing += walk(f["type"], f"{where}.{f['name']}")
            if schema.get("type") == "record" and not schema.get("doc"):
                missing.append(where)
        elif isinstance(schema, list):
            for branch in schema:
                missing += walk(
                    branch, f"{where}|{branch.get('name', '?') if isinstance(branch, dict) else branch}"
                )
        return missing

    for version in (current(topic), *history(topic)):
        assert walk(version.raw, f"{topic}:{version.version}") == []


def _tokens_with(mutation: Any) -> dict[str, Any]:
    schema = copy.deepcopy(current("conversation.tokens").raw)
    delta = next(b for b in schema["fields"][1]["type"] if b["name"] == "TokenDelta")
    mutation(delta["fields"])
    return schema


def _remove(name: str) -> Any:
    return lambda fields: fields.remove(next(f for f in fields if f["name"] == name))


def _rename(old: str, new: str) -> Any:
    return lambda fields: next(f for f in fields if f["name"] == old).update(name=new)


def test_the_check_catches_a_field_removed_that_old_readers_need() -> None:
    problems = check_pair(current("conversation.tokens"), _tokens_with(_remove("text")))
    assert [p.direction for p in problems] == ["forward"]
    assert "record TokenDelta" in str(problems[0])
    assert "text" in str(problems[0])


def test_the_check_catches_a_rename_without_default() -> None:
    problems = check_pair(current("conversation.tokens"), _tokens_with(_rename("text", "content")))
    assert {p.direction for p in problems} == {"backward", "forward"}
    assert "content" in " ".join(map(str, problems))


def test_the_check_catches_a_changed_type() -> None:
    def narrow(fields: list[dict[str, Any]]) -> None:
        next(f for f in fields if f["name"] == "seq")["type"] = "int"

    assert check_pair(current("conversation.tokens"), _tokens_with(narrow))


def test_the_check_catches_a_new_field_without_default() -> None:
    problems = check_pair(
        current("conversation.tokens"),
        _tokens_with(lambda fields: fields.append({"name": "signature", "type": "string", "doc": "x"})),
    )
    assert [p.direction for p in problems] == ["backward"]


def test_a_new_field_with_default_is_compatible_and_old_data_reads_with_it() -> None:
    """What EVOLUTION.md prescribes, exercised end to end with the real bytes."""
    newer = _tokens_with(
        lambda fields: fields.append({"name": "signature", "type": "string", "default": "", "doc": "x"})
    )
    assert check_pair(current("conversation.tokens"), newer) == []

    old_value = TOKENS.encode(TokenDelta("c", "r", 7, "hi", 1))
    new_reader = fastavro.parse_schema(strip_logical_types(newer))
    body = io.BytesIO(old_value[10:])
    env: Any = fastavro.schemaless_reader(
        body, TOKENS.writer.parsed, new_reader, return_record_name=True, return_record_name_override=True
    )
    assert env["payload"][1]["signature"] == ""
    assert env["payload"][1]["seq"] == 7


def test_a_consumer_reads_records_of_every_released_version() -> None:
    """Bytes written with each released schema (not via the Python types) decode today."""
    sample = {
        "conversation_id": "c",
        "payload": (
            "dev.tokenlog.tokens.TokenDelta",
            {"response_id": "r", "seq": 1, "text": "x", "attempt": 0, "produced_at": 5}
            | {"prev_hash": b"", "hash": b""},  # v2 on; older writers ignore them
        ),
    }
    codec: TopicCodec[TokenEvent] = TopicCodec("conversation.tokens")
    for version in history("conversation.tokens"):
        buf = io.BytesIO()
        buf.write(MAGIC + schema_fingerprint(version.raw))
        fastavro.schemaless_writer(buf, version.parsed, sample)
        decoded = codec.decode(buf.getvalue())
        assert (decoded.conversation_id, getattr(decoded, "seq", None)) == ("c", 1), version.version
