"""A compose file loaded the way `docker compose config` loads it (compose-go's loader), in Python,
so that checking infra/docker-compose.yml needs neither Docker nor a Go toolchain:

1. YAML (PyYAML's safe loader: YAML 1.1, so an unquoted ``no`` is a boolean, which the schema then
   refuses where compose-go would take a string; stricter, never laxer);
2. interpolation of every string value, compose's grammar: ``$$``, ``$NAME``, ``${NAME}`` and
   ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``,
   ``${NAME:+replacement}``, ``${NAME+replacement}``, nesting in the default; anything else after a
   ``$`` is an error. A required variable missing says ``required variable NAME is missing a value:
   error``, as compose does. Only the given environment is read (no ``.env``: the test is hermetic);
3. validation against the Compose Specification's JSON schema, vendored as tests/compose-spec.json
   (compose-spec/compose-go, schema/compose-spec.json at e70e961c3a3acebf0800b882f1afb3dbf1fb74a2,
   Apache-2.0), after interpolation as compose-go validates;
4. compose-go's consistency checks that apply to a file like ours: ``depends_on`` names a service,
   a service's networks and named volumes are declared at the top level.

``load(path, env)`` returns the interpolated model or raises ``ComposeError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

SCHEMA = Path(__file__).with_name("compose-spec.json")
NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class ComposeError(Exception):
    """The compose file does not load; the message says why, as compose would."""


def load(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file at ``path`` with ``env`` as its environment: interpolated, validated."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ComposeError(f"{path}: a compose file is a mapping")
    model: dict[str, Any] = interpolate_tree(raw, env)
    errors = [
        f"{'.'.join(map(str, e.instance_path)) or '(root)'}: {e.message}"
        for e in _validator().iter_errors(model)
    ]
    if errors:
        raise ComposeError("validating " + str(path) + ":\n" + "\n".join(errors))
    check_consistency(model)
    return model


@cache
def _validator() -> Any:
    return jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))


def interpolate_tree(value: Any, env: Mapping[str, str]) -> Any:
    """Every string value (not the keys) of a YAML tree, interpolated."""
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, dict):
        return {key: interpolate_tree(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(item, env) for item in value]
    return value


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """One string, with compose's ``$`` substitutions."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        rest = text[i + 1 :]
        if rest.startswith("$"):
            out.append("$")
            i += 2
        elif rest.startswith("{"):
            end = _closing_brace(text, i + 2)
            out.append(_braced(text[i + 2 : end], env))
            i = end + 1
        elif named := NAME.match(rest):
            out.append(env.get(named.group(), ""))
            i += 1 + named.end()
        else:
            raise ComposeError(
                f"invalid interpolation format for {text!r}: a '$' must start a variable or be '$$'"
            )
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    """The index of the ``}`` that closes the ``${`` before ``start`` (``${`` inside nest)."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ComposeError(f"invalid interpolation format for {text!r}: unclosed '${{'")


def _braced(inner: str, env: Mapping[str, str]) -> str:
    """``NAME`` or ``NAME<operator><argument>``, the inside of ``${...}``."""
    named = NAME.match(inner)
    if named is None:
        raise ComposeError(f"invalid interpolation format for '${{{inner}}}': not a variable name")
    name, tail = named.group(), inner[named.end() :]
    value = env.get(name)
    if not tail:
        return value or ""
    operator = next((op for op in OPERATORS if tail.startswith(op)), None)
    if operator is None:
        raise ComposeError(f"invalid interpolation format for '${{{inner}}}'")
    argument = tail[len(operator) :]
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("-"):
        return value if present and value is not None else interpolate(argument, env)
    if operator.endswith("+"):
        return interpolate(argument, env) if present else ""
    if not present or value is None:  # ? and :?
        message = interpolate(argument, env)
        raise ComposeError(
            f"required variable {name} is missing a value" + (f": {message}" if message else "")
        )
    return value


def check_consistency(model: Mapping[str, Any]) -> None:
    """What compose-go checks across sections: references name something declared."""
    services: Mapping[str, Any] = model.get("services") or {}
    declared = {section: set((model.get(section) or {}).keys()) for section in ("networks", "volumes")}
    declared["networks"].add("default")
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for other in depends:
            if other not in services:
                raise ComposeError(f"service {name!r} depends on undefined service {other!r}")
        networks = service.get("networks") or {}
        for network in networks:
            if network not in declared["networks"]:
                raise ComposeError(f"service {name!r} refers to undefined network {network!r}")
        for volume in service.get("volumes") or []:
            source = _named_volume(volume)
            if source is not None and source not in declared["volumes"]:
                raise ComposeError(f"service {name!r} refers to undefined volume {source!r}")


def _named_volume(volume: str | Mapping[str, Any]) -> str | None:
    """The named volume a service's volume entry mounts (``None``: a bind mount or tmpfs)."""
    if isinstance(volume, str):
        source, sep, _ = volume.partition(":")
        if not sep or source.startswith((".", "/", "~")) or "$" in source:
            return None
        return source
    if volume.get("type", "volume") == "volume" and volume.get("source"):
        return str(volume["source"])
    return None
