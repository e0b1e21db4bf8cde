"""Typed reads of environment variables for the settings objects of every process (the only
place besides ``from_env`` constructors that looks at the environment's values)."""

from __future__ import annotations

from collections.abc import Mapping


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """``env[name]``, or ``default`` when unset or empty."""
    value = env.get(name)
    return default if value is None or value == "" else value


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env_str(env, name, str(default)))
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {env.get(name)!r}") from exc


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env_str(env, name, str(default)))
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {env.get(name)!r}") from exc


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env_str(env, name, "true" if default else "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name} must be true or false, got {env.get(name)!r}")
    return value in ("true", "1", "yes")
