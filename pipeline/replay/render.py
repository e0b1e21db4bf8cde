"""Turns as JSON Lines (one turn per line) and as readable Markdown. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import groupby

import orjson

from pipeline.replay.transcript import Turn


def jsonl(turns: Iterable[Turn]) -> Iterator[bytes]:
    for turn in turns:
        yield orjson.dumps(turn.as_dict()) + b"\n"


def when(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _seconds(ms: int | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms} ms"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines() or [""])


def markdown(turns: Iterable[Turn]) -> Iterator[str]:
    for cid, group in groupby(turns, key=lambda t: t.conversation_id):
        items = list(group)
        chains = sorted({t.chain for t in items if t.response_id is not None}) or ["none"]
        yield f"# Conversation `{cid}`\n\n"
        yield f"_partition {items[0].partition} · {len(items)} turns · chain: {', '.join(chains)}_\n\n"
        for number, turn in enumerate(items, 1):
            yield f"## Turn {number} — {when(turn.submitted_at or turn.started_at)}\n\n"
            device = f" on `{turn.device_id}`" if turn.device_id else ""
            who = f"**{turn.user_id or 'user'}**{device}"
            yield f"{who} asked (`{turn.prompt_id}`):\n\n{_quote(turn.prompt)}\n\n"
            if turn.response_id is None:
                yield "_not answered yet_\n\n"
                continue
            facts = [turn.status + (f" ({turn.finish_reason})" if turn.finish_reason else "")]
            if turn.error_class:
                facts.append(f"error {turn.error_class}: {turn.error_message}")
            if turn.cancelled_by:
                facts.append(f"stopped by {turn.cancelled_by}")
            facts.append(f"first token {_seconds(turn.ttft_ms)}")
            if turn.duration_ms is not None:
                facts.append(f"took {_seconds(turn.duration_ms)}")
            if turn.completion_tokens:
                facts.append(f"{turn.completion_tokens} tokens")
            if turn.attempts > 1:
                facts.append(f"{turn.attempts} attempts (failover)")
            yield f"**{turn.model}** answered (`{turn.response_id}`) — {' · '.join(facts)}:\n\n"
            yield (turn.text or "_(no text)_") + "\n\n"
            yield f"<sub>offsets {turn.first_offset} to {turn.last_offset} · chain {turn.chain}</sub>\n\n"
            if turn.violations:
                yield "**Integrity violations:**\n\n" + "".join(f"- `{v}`\n" for v in turn.violations) + "\n"
