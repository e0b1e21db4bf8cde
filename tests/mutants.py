"""Injected bugs the suite must catch (``make mutants``).

Each mutant is one small edit of the source that breaks a guarantee tokenlog makes — the reader
drops nothing twice, seqs are contiguous, an error reaches the client, a snapshot never trails the
stream, no acknowledged token is lost across a broker restart — and the tests that must fail on
it. ``make mutants`` applies each in turn, runs its tests against the real broker, records which
test failed first, and restores the file (in a ``finally``, on Ctrl-C too). It fails when a
mutant survives (its tests pass with the bug in) or when its tests fail without it (``--baseline``).

    .venv/bin/python -m tests.mutants                      # every mutant
    .venv/bin/python -m tests.mutants --only skip_seq      # one
    .venv/bin/python -m tests.mutants --baseline           # also run each selection unmutated first
    .venv/bin/python -m tests.mutants --list

The tree must be clean in the files a mutant edits (it refuses to run otherwise, so it can never
overwrite work in progress). The table goes to stdout and to ``.local/mutants.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    """The bug, as a user would meet it."""
    path: str
    """The file edited (relative to the repository)."""
    old: str
    """Text that occurs exactly once in ``path``."""
    new: str
    tests: tuple[str, ...]
    """The pytest selection that must fail (node ids or paths, ``-k`` expressions after ``-k``)."""


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "reader_dedup",
        "the resume merge passes on a buffered live event the catch-up already delivered "
        "(its de-duplication dropped): a reconnecting client gets tokens twice",
        "gateway/merge.py",
        "            if entry.offset <= last:\n",
        "            if False:\n",
        ("tests/unit/test_gateway_merge_hub.py", "tests/gateway/test_streams.py"),
    ),
    Mutant(
        "skip_seq",
        "the worker skips seq 3 of every answer: one token's seq is never written",
        "pipeline/generation.py",
        "                first = False\n            seq += 1\n",
        "                first = False\n            seq += 2 if seq == 2 else 1\n",
        ("tests/unit/test_generation.py", "tests/pipeline/test_worker_e2e.py"),
    ),
    Mutant(
        "swallowed_error",
        "the gateway swallows a failed prompt write (Kafka unreachable) and answers 202 "
        "with no record written, instead of 503 unavailable",
        "gateway/commands.py",
        "        except (KafkaError, TimeoutError) as exc:\n            raise Unavailable(",
        "        except (KafkaError, TimeoutError) as exc:\n"
        "            return 0, -1\n"
        "            raise Unavailable(",
        ("tests/chaos/test_chaos.py", "-k", "cannot_write"),
    ),
    Mutant(
        "stale_snapshot",
        "the gateway serves the session app's snapshot as it is, without the events its reader "
        "has already streamed (a snapshot that trails the stream)",
        "gateway/service.py",
        '        if top <= after:\n            self.metrics.snapshot_folds.labels("current").inc()\n',
        '        if True:\n            self.metrics.snapshot_folds.labels("current").inc()\n',
        ("tests/gateway/test_snapshot_fold.py",),
    ),
    Mutant(
        "lost_across_broker_restart",
        "a token the worker produces while it has no connection to the broker is dropped "
        "(fire-and-forget while the broker restarts) instead of being retried; the answer "
        "still ends, with a hole in its seqs",
        "pipeline/sink.py",
        "        record = TOKENS.encode(event) if value is None else value\n",
        "        record = TOKENS.encode(event) if value is None else value\n"
        "        offline = not any(c.connected() for c in self.producer.client._conns.values())\n"
        '        if offline and type(event).__name__ == "TokenDelta":\n'
        "            lost: asyncio.Future[int] = asyncio.get_running_loop().create_future()\n"
        "            lost.set_result(-1)\n"
        "            return lost\n",
        ("tests/chaos/test_chaos.py", "-k", "broker_restarted"),
    ),
)


@dataclass
class Outcome:
    mutant: Mutant
    caught: bool
    failed_test: str
    detail: str
    seconds: float
    baseline_ok: bool | None = None


class MutantError(Exception):
    """A mutant cannot be applied (the tree has moved on, or has uncommitted edits there)."""


def check_applicable(m: Mutant, root: Path = ROOT) -> str:
    """``m.path``'s text, once it is certain ``m`` applies to it cleanly."""
    path = root / m.path
    source = path.read_text()
    count = source.count(m.old)
    if count != 1:
        raise MutantError(f"{m.name}: the text to replace occurs {count} times in {m.path} (expected once)")
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", m.path], cwd=root, check=False)
    if dirty.returncode != 0:
        raise MutantError(f"{m.name}: {m.path} has uncommitted changes; commit or stash them first")
    return source


@contextmanager
def applied(m: Mutant, root: Path = ROOT) -> Iterator[None]:
    """``m`` written into its file for the duration; the original restored on any exit."""
    path = root / m.path
    original = check_applicable(m, root)

    def restore_and_exit(signum: int, _frame: FrameType | None) -> None:
        path.write_text(original)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, restore_and_exit) for s in (signal.SIGINT, signal.SIGTERM)}
    path.write_text(original.replace(m.old, m.new))
    try:
        yield
    finally:
        path.write_text(original)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _pytest(selection: tuple[str, ...], timeout_s: float) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *selection]
    env = {**os.environ, "COLUMNS": "200"}
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        return -1, out + f"\n(timed out after {timeout_s:g} s)"
    return done.returncode, done.stdout + done.stderr


def _first_failure(output: str) -> tuple[str, str]:
    """The first failed test's node id (pytest's ``-rf`` summary) and the first error line of
    its report, and how many tests failed."""
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    if match is None:
        return "", ""
    errors = re.findall(r"^E +(\S.*)$", output, re.MULTILINE)
    failed = re.search(r"(\d+) failed", output)
    detail = " / ".join(errors[:3])[:200]
    if failed:
        detail = f"{failed.group(1)} failed; {detail}"
    return match.group(1), detail


def run(m: Mutant, *, baseline: bool, timeout_s: float) -> Outcome:
    baseline_ok: bool | None = None
    if baseline:
        check_applicable(m)
        code, output = _pytest(m.tests, timeout_s)
        baseline_ok = code == 0
        if not baseline_ok:
            test, detail = _first_failure(output)
            print(f"  baseline of {m.name} failed without the mutant: {test} {detail}", flush=True)
    began = time.monotonic()
    with applied(m):
        code, output = _pytest(m.tests, timeout_s)
    seconds = round(time.monotonic() - began, 1)
    # 1: tests failed. 2-5 (interrupted, internal error, usage, nothing collected) or a timeout
    # mean the selection did not run as meant: not a catch.
    test, detail = _first_failure(output)
    if code != 1 or not test:
        tail = "\n".join(output.strip().splitlines()[-15:])
        return Outcome(m, False, "", f"pytest exit {code}: {tail}", seconds, baseline_ok)
    return Outcome(m, True, test, detail, seconds, baseline_ok)


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| mutant | the bug | caught | first failing test | seconds |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for o in outcomes:
        verdict = "yes" if o.caught else "**SURVIVED**"
        if o.baseline_ok is False:
            verdict += " (baseline failed)"
        test = f"`{o.failed_test}`" if o.failed_test else o.detail.splitlines()[0] if o.detail else ""
        lines.append(f"| {o.mutant.name} | {o.mutant.what} | {verdict} | {test} | {o.seconds:g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--baseline", action="store_true", help="run each selection unmutated first")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    args = parser.parse_args(argv)
    chosen = list(MUTANTS)
    if args.only:
        names = {n.strip() for n in args.only.split(",")}
        unknown = names - {m.name for m in MUTANTS}
        if unknown:
            parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
        chosen = [m for m in MUTANTS if m.name in names]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}\n    {m.path}; tests: {' '.join(m.tests)}")
        return 0
    try:
        for m in chosen:
            check_applicable(m)
    except MutantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcomes = []
    for m in chosen:
        print(f"mutant {m.name}: {m.path}; running {' '.join(m.tests)}", flush=True)
        outcome = run(m, baseline=args.baseline, timeout_s=args.timeout)
        outcomes.append(outcome)
        state = f"caught by {outcome.failed_test} ({outcome.detail})" if outcome.caught else "SURVIVED"
        print(f"mutant {m.name}: {state} in {outcome.seconds:g} s", flush=True)
        if not outcome.caught:
            print(outcome.detail, flush=True)
    text = table(outcomes)
    print(text)
    out = ROOT / ".local" / "mutants.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"(also in {out.relative_to(ROOT)})")
    survived = [o.mutant.name for o in outcomes if not o.caught or o.baseline_ok is False]
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
