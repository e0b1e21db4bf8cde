"""Schema evolution checks (the rules are in ``schemas/EVOLUTION.md``).

Two schemas are compared both ways with the ``avro`` package's reader/writer compatibility
checker: **backward** (the newer schema reads data written with the older one) and **forward**
(the older schema reads data written with the newer one). ``python -m schemas.compat`` checks
every topic's current schema against every released version and exits non-zero on a break.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import avro.compatibility
import avro.schema

from schemas.registry import TOPICS, SchemaVersion, current, history


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One way a reader cannot read a writer's data."""

    direction: str
    """``backward`` (new reads old) or ``forward`` (old reads new)."""
    older: str
    newer: str
    messages: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.direction} {self.newer} vs {self.older}: " + "; ".join(self.messages)


def _parse(raw: dict[str, Any]) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(raw))


def _check(reader: dict[str, Any], writer: dict[str, Any]) -> tuple[str, ...]:
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(_parse(reader), _parse(writer))
    if result.compatibility is avro.compatibility.SchemaCompatibilityType.compatible:
        return ()
    return tuple(
        f"{kind.name} at {location}: {message}"
        for kind, location, message in zip(
            result.incompatibilities, result.locations, result.messages, strict=False
        )
    ) or ("incompatible",)


def _branches(envelope: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The payload union's records by name (each branch defines its nested types inline)."""
    payload = next((f for f in envelope.get("fields", []) if f["name"] == "payload"), None)
    if payload is None or not isinstance(payload["type"], list):
        return {}
    namespace = envelope.get("namespace", "")
    return {
        b["name"]: {**b, "namespace": b.get("namespace", namespace)}
        for b in payload["type"]
        if isinstance(b, dict) and b.get("type") == "record"
    }


def reader_can_read(reader: dict[str, Any], writer: dict[str, Any]) -> tuple[str, ...]:
    """Why ``reader`` cannot read data written with ``writer``; empty when it can.

    The checker reports a broken record inside the payload union only as a missing union
    branch; each writer branch is then compared with the reader's branch of the same name,
    so the message names the record and field that broke."""
    problems = _check(reader, writer)
    if not problems:
        return ()
    readers, writers = _branches(reader), _branches(writer)
    detailed = []
    for name, branch in writers.items():
        if name not in readers:
            detailed.append(f"record {name} is written but the reader's union has no such branch")
        else:
            detailed += [f"record {name}: {p}" for p in _check(readers[name], branch)]
    return tuple(detailed) or problems


def check_pair(
    older: SchemaVersion | dict[str, Any],
    newer: SchemaVersion | dict[str, Any],
    older_name: str = "older",
    newer_name: str = "newer",
) -> list[Incompatibility]:
    """Backward and forward incompatibilities between two schemas."""
    old_raw = older.raw if isinstance(older, SchemaVersion) else older
    new_raw = newer.raw if isinstance(newer, SchemaVersion) else newer
    old_name = older.version if isinstance(older, SchemaVersion) else older_name
    new_name = newer.version if isinstance(newer, SchemaVersion) else newer_name
    found = []
    if problems := reader_can_read(new_raw, old_raw):
        found.append(Incompatibility("backward", old_name, new_name, problems))
    if problems := reader_can_read(old_raw, new_raw):
        found.append(Incompatibility("forward", old_name, new_name, problems))
    return found


def check_topic(topic: str) -> list[Incompatibility]:
    """The current schema of ``topic`` against every released version, both ways."""
    return [problem for released in history(topic) for problem in check_pair(released, current(topic))]


def main() -> int:
    broken = False
    for topic in TOPICS:
        versions = ", ".join(v.version for v in history(topic))
        problems = check_topic(topic)
        print(f"{topic}: current vs [{versions}]: {'OK' if not problems else 'BROKEN'}")
        for problem in problems:
            print(f"  {problem}")
        broken = broken or bool(problems)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
