"""``python -m pipeline replay``: rebuild conversations from the log, verify them, export them.

    python -m pipeline replay --conversation c-42                      # JSON Lines on stdout
    python -m pipeline replay --conversation c-42 --format markdown
    python -m pipeline replay --conversation c-42 --as-of 2026-11-24T09:30:00Z
    python -m pipeline replay --since 2026-11-24T00:00Z --until 2026-11-25T00:00Z --verify
    python -m pipeline replay --since ... --until ... --format parquet --out exports/day

A summary goes to stderr (records, events/s, answers verified); ``--verify`` also prints every
violation with its partition and offset and exits with 1 when there is any.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from infra.broker import client_security
from infra.settings import InfraSettings
from pipeline.replay import export, render
from pipeline.replay.source import ReadStats, ReplayError, ReplaySource, Selection
from pipeline.replay.transcript import Turn
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC


def moment(text: str) -> int:
    """ISO 8601 (``2026-11-24T09:30:00Z``; no zone means UTC) or ms since the epoch."""
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time or epoch milliseconds: {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline replay", description=__doc__.split("\n\n")[0])
    what = p.add_argument_group("what to replay (a conversation, a time range, or both)")
    what.add_argument("--conversation", help="one conversation id")
    what.add_argument("--since", type=moment, help="answers started at or after (ISO 8601 or epoch ms)")
    what.add_argument("--until", type=moment, help="answers started before")
    what.add_argument("--as-of", type=moment, help="the log as it stood at this moment")
    p.add_argument("--format", choices=["jsonl", "markdown", "parquet"], default="jsonl")
    p.add_argument("--out", type=Path, help="file (jsonl, markdown) or directory (parquet); default stdout")
    p.add_argument("--verify", action="store_true", help="print every violation; exit 1 if any")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS or local)")
    p.add_argument("--tokens-topic", default=TOKENS_TOPIC)
    p.add_argument("--prompts-topic", default=PROMPTS_TOPIC)
    return p


def summary(turns: list[Turn], stats: ReadStats) -> str:
    answers = [t for t in turns if t.response_id is not None]
    chains = {kind: sum(t.chain == kind for t in answers) for kind in ("intact", "violations", "unchained")}
    return (
        f"replayed {len(turns)} turns of {len({t.conversation_id for t in turns})} conversations: "
        f"{stats.records} token records ({stats.bytes / 1e6:.1f} MB), {stats.events} events decoded, "
        f"{stats.prompts} prompts, {len(stats.undecodable)} undecodable, in {stats.seconds:.2f} s "
        f"= {stats.events_per_s:,.0f} records/s; answers: {chains['intact']} chain intact, "
        f"{chains['violations']} with violations, {chains['unchained']} without a chain (before v2)"
    )


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.conversation is None and args.since is None:
        err.write("say what to replay: --conversation, --since (with --until), or both\n")
        return 2
    if args.format == "parquet" and args.out is None:
        err.write("--format parquet needs --out DIRECTORY\n")
        return 2
    try:
        selection = Selection(args.conversation, args.since, args.until, args.as_of)
        settings = InfraSettings.from_env()
        # KAFKA_SECURITY_PROTOCOL and friends for --bootstrap; the local broker's own otherwise.
        security = settings.security if args.bootstrap else client_security(settings)
        source = ReplaySource(
            args.bootstrap or settings.bootstrap,
            tokens_topic=args.tokens_topic,
            prompts_topic=args.prompts_topic,
            security=security,
        )
        replay, stats = asyncio.run(source.replay(selection))
    except ReplayError as exc:
        err.write(f"replay: {exc}\n")
        return 2
    turns = replay.turns()
    if args.format == "parquet":
        for path in export.write(turns, args.out):
            err.write(f"wrote {path}\n")
    else:
        lines = (
            render.jsonl(turns) if args.format == "jsonl" else (s.encode() for s in render.markdown(turns))
        )
        if args.out is None:
            for line in lines:
                out.write(line.decode())
        else:
            with args.out.open("wb") as f:
                f.writelines(lines)
    for topic, partition, offset, reason in stats.undecodable:
        err.write(f"undecodable {topic} partition {partition} offset {offset}: {reason}\n")
    findings = replay.findings()
    if args.verify:
        for finding in findings:
            err.write(f"{finding}\n")
    err.write(summary(turns, stats) + "\n")
    return 1 if args.verify and findings else 0


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv), sys.stdout, sys.stderr)
