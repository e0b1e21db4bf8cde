"""The demo provider's prompt markers, parsed and checked against their caps in one pure function.

Used by the demo provider (``demo.py``) to script an answer and by the gateway to refuse a prompt
whose markers exceed the caps (400 ``invalid_marker``) before it reaches the log. Markers:

- ``[[tokens=N]]``: exactly N tokens (an integer, at most ``caps.max_tokens``);
- ``[[rate=R]]``: R tokens per second, 0 (as fast as possible) or within
  ``[caps.min_rate, caps.max_rate]``; with ``tokens`` too, ``N / R`` is at most ``caps.max_seconds``;
- ``[[fail_after=N]]``: fail with ``ScriptedFailureError`` after N tokens;
- ``[[exit_after=N]]``: test-only (``caps.test_markers``): the worker process exits after N
  tokens, as a crash would. Refused when test markers are off.

A marker written twice counts with its last value. Text that does not match the marker shape
(``[[tokens=abc]]``) is plain text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import MarkerError
from pipeline.settings import MarkerCaps

_MARKER = re.compile(r"\[\[(tokens|rate|fail_after|exit_after)=([0-9.]{1,32})\]\]")
_INT = re.compile(r"[0-9]+")
_RATE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Markers:
    """What a prompt's markers ask of the demo provider (None: not given)."""

    tokens: int | None = None
    rate: float | None = None
    fail_after: int | None = None
    exit_after: int | None = None


def parse_markers(text: str, caps: MarkerCaps) -> Markers:
    """The markers of ``text``; ``MarkerError`` (a message safe to show the user) when one is
    malformed or over its cap."""
    raw = dict(_MARKER.findall(text))
    if not raw:
        return Markers()
    counts: dict[str, int] = {}
    for name in ("tokens", "fail_after", "exit_after"):
        if name in raw:
            if not _INT.fullmatch(raw[name]):
                raise MarkerError(f"[[{name}=N]] takes a whole number, got {raw[name]!r}")
            counts[name] = int(raw[name])
            if counts[name] > caps.max_tokens:
                raise MarkerError(f"[[{name}=N]] is at most {caps.max_tokens}, got {counts[name]}")
    if "exit_after" in counts and not caps.test_markers:
        raise MarkerError("[[exit_after=N]] is a test-only marker and test markers are off")
    rate: float | None = None
    if "rate" in raw:
        if not _RATE.fullmatch(raw["rate"]):
            raise MarkerError(f"[[rate=R]] takes a number, got {raw['rate']!r}")
        rate = float(raw["rate"])
        if rate != 0 and not caps.min_rate <= rate <= caps.max_rate:
            raise MarkerError(
                f"[[rate=R]] is 0 (as fast as possible) or between {caps.min_rate:g} and "
                f"{caps.max_rate:g}, got {rate:g}"
            )
        tokens = counts.get("tokens")
        if tokens is not None and rate > 0 and tokens / rate > caps.max_seconds:
            raise MarkerError(
                f"[[tokens={tokens}]] at [[rate={rate:g}]] lasts {tokens / rate:.0f} s, "
                f"over the {caps.max_seconds:g} s cap"
            )
    return Markers(counts.get("tokens"), rate, counts.get("fail_after"), counts.get("exit_after"))
