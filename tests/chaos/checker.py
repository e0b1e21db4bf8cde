"""The chaos suite's judge: the log itself against the prompts acknowledged, and what each client
received against the log.

Pure: the log side is a conversation's events in offset order (``LogSide``, with the replay
verifier's findings, so writes of a fenced worker are known by offset); the client side is the
frames one follower received, in order, across all its reconnects.

``check_answers`` judges the log, per acknowledged prompt (202) and its text:

- ``unanswered``: no ``ResponseStarted`` for it;
- ``regenerated``: answered again: a second attempt-0 ``ResponseStarted`` (the answer id is derived
  from the prompt id, so a second answer shares it), or text already accepted thrown away by a
  restart (a ``RESTART`` takeover, or a later attempt's ``ResponseStarted``; the demo provider
  always continues a prefix);
- ``log_missing`` / ``log_doubled`` / ``log_extra`` / ``log_broken``: the replay verifier's
  findings (``pipeline/replay/verify.py``) other than ``fenced``: a seq or event missing; an event
  or seq written twice; an event after the terminal or a second terminal; reordered, altered,
  broken-link or inconsistent events;
- ``not_completed``: the answer's status, folded by the reader rule, is not ``completed``;
- ``wrong_text``: its text is not what the deterministic demo provider produces for the prompt;

and ``unacknowledged_answer``: an answer to a prompt that was never acknowledged.

``check`` reports, per client and per answer:

- ``lost``: an event of the log after the client's start that it never received;
- ``gap``: a lost event the client received later events after (a hole, not a missing tail);
- ``duplicated``: an event (offset) received twice;
- ``reordered``: an event received after a later one of the log;
- ``text_mismatch``: an answer whose text or status, folded by the reader rule from what the
  client received, differs from the log's;
- ``terminal_missing`` / ``terminal_doubled``: a finished answer's terminal event not received,
  or more than one terminal event (of writers not fenced) received for an answer;
- ``fenced``: an event of a fenced writer (the replay verifier's ``fenced``) written after its
  answer's takeover record that the client's fold accepted (one written before that record is
  applied and then cut back by the takeover, which ``text_mismatch`` judges);
- ``unknown``: an event frame whose offset the log does not hold for the conversation;
- ``resync``: the gateway replaced the client's state with a snapshot. In these scenarios every
  cursor stays valid, so a resync is counted as a failure too.

The chaos run adds what it judges around the checker (``tests/chaos/world.py``):

- ``errors``: an error frame, close code, HTTP status or exception a client or the submit loop met
  that the scenario does not expect;
- ``idle_fault``: a fault that struck while no answer was streaming (by the log's own times);
- ``no_effect``: a fault whose effect did not show (no takeover after a worker kill, nothing fenced
  after a zombie woke, nothing cut by a proxy, a follower that never read on after the fault);
- ``snapshot_mismatch``: the session app's snapshot of a conversation, read back after it
  recovered, differs from the log's fold.

A scenario passes only when every count is zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.wire import is_event, record_of
from pipeline.providers.demo import DemoProvider
from pipeline.replay.verify import AnswerAudit, Finding, Kind
from pipeline.settings import DemoSettings
from schemas.answers import AnswerFold, Status, Verdict
from schemas.cursor import Cursor, parse
from schemas.records import (
    PromptSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseResumed,
    ResponseStarted,
    ResumeMode,
    TokenEvent,
)

LOG_KINDS = (
    "unanswered",
    "regenerated",
    "log_missing",
    "log_doubled",
    "log_extra",
    "log_broken",
    "not_completed",
    "wrong_text",
    "unacknowledged_answer",
)
CLIENT_KINDS = (
    "lost",
    "gap",
    "duplicated",
    "reordered",
    "text_mismatch",
    "terminal_missing",
    "terminal_doubled",
    "fenced",
    "unknown",
    "resync",
)
RUN_KINDS = ("errors", "idle_fault", "no_effect", "snapshot_mismatch")
KINDS = LOG_KINDS + CLIENT_KINDS + RUN_KINDS
FINDING_KINDS = {
    Kind.MISSING: "log_missing",
    Kind.DUPLICATED: "log_doubled",
    Kind.LATE: "log_extra",
    Kind.EXTRA_TERMINAL: "log_extra",
    Kind.REORDERED: "log_broken",
    Kind.ALTERED: "log_broken",
    Kind.BROKEN_LINK: "log_broken",
    Kind.INCONSISTENT: "log_broken",
}
"""The tally's name for each finding of the replay verifier; ``fenced`` is no violation."""
DEMO = DemoProvider(DemoSettings())
TERMINAL = (ResponseCompleted, ResponseFailed, ResponseCancelled)


@dataclass
class Tally:
    """Counts of each kind of violation, plus how much was checked."""

    events_checked: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    def add(self, kind: str, detail: str, n: int = 1) -> None:
        assert kind in KINDS, kind
        self.counts[kind] += n
        if len(self.details) < 50:
            self.details.append(f"{kind}: {detail}")

    def merge(self, other: Tally) -> None:
        self.events_checked += other.events_checked
        self.counts.update(other.counts)
        self.details.extend(other.details[: max(0, 50 - len(self.details))])

    @property
    def clean(self) -> bool:
        return not any(self.counts.values())

    def row(self) -> dict[str, int]:
        return {"events_checked": self.events_checked, **{k: self.counts[k] for k in KINDS}}


@dataclass
class LogSide:
    """One conversation as the log holds it."""

    events: list[tuple[int, TokenEvent]]
    """(offset, event) in offset order."""
    fenced: frozenset[int] = frozenset()
    """Offsets the replay verifier found written by a fenced worker *after* the takeover record
    of its answer: a client holds the new attempt by then and must reject them."""
    answers: dict[str, AnswerFold] = field(default_factory=dict)
    """Each answer folded by the reader rule."""
    dropped: frozenset[int] = frozenset()
    """Offsets the verifier found written by the old worker after its successor read the answer
    but *before* the successor's takeover record: a client applies them (nothing fences them yet)
    and the takeover cuts them back; the answer's text check judges the result."""
    findings: tuple[Finding, ...] = ()
    """The verifier's other findings (every one a violation)."""

    @classmethod
    def of(cls, events: Iterable[tuple[int, TokenEvent]], partition: int = 0) -> LogSide:
        ordered = sorted(events, key=lambda pair: pair[0])
        audits: dict[str, AnswerAudit] = {}
        folds: dict[str, AnswerFold] = {}
        after_takeover: set[int] = set()
        for offset, event in ordered:
            rid = event.response_id
            audit = audits.setdefault(rid, AnswerAudit(rid, partition))
            if event.attempt < audit.fence:  # the verifier's own fence: a takeover is already in the log
                after_takeover.add(offset)
            audit.feed(offset, event)
            folds.setdefault(rid, AnswerFold(rid)).apply(event)
        findings = [f for audit in audits.values() for f in audit.close()]
        fenced = {f.offset for f in findings if f.kind is Kind.FENCED}
        return cls(
            ordered,
            frozenset(fenced & after_takeover),
            folds,
            frozenset(fenced - after_takeover),
            tuple(f for f in findings if f.kind is not Kind.FENCED),
        )


def offset_of(frame: dict[str, Any]) -> int:
    position = parse(frame["cursor"])
    assert isinstance(position, Cursor)
    return position.last_offset


def check(log: LogSide, frames: Sequence[dict[str, Any]], *, after: int, name: str = "client") -> Tally:
    """One client that followed the conversation from offset ``after`` until the end of the log."""
    tally = Tally()
    in_log = dict(log.events)
    wanted = [offset for offset, _ in log.events if offset > after]
    received: list[int] = []
    seen: set[int] = set()
    newest = after
    folds: dict[str, AnswerFold] = {}
    terminals: Counter[str] = Counter()
    for frame in frames:
        kind = frame.get("type")
        if kind in ("resync", "snapshot"):
            tally.add("resync", f"{name} got a {kind} ({frame.get('reason', '')})")
            continue
        if not is_event(frame):
            continue
        offset = offset_of(frame)
        if offset not in in_log or offset <= after:
            tally.add("unknown", f"{name} received offset {offset}, not an event of the log after {after}")
            continue
        if offset in seen:
            tally.add("duplicated", f"{name} received offset {offset} again")
            continue
        if offset < newest:
            tally.add("reordered", f"{name} received offset {offset} after {newest}")
        seen.add(offset)
        received.append(offset)
        newest = max(newest, offset)
        event = record_of(frame)
        verdict = folds.setdefault(event.response_id, AnswerFold(event.response_id)).apply(event)
        if offset in log.fenced and verdict is Verdict.ACCEPTED:
            tally.add("fenced", f"{name} applied the fenced write at offset {offset}")
        if isinstance(event, TERMINAL) and offset not in log.fenced and offset not in log.dropped:
            terminals[event.response_id] += 1
    tally.events_checked = len(wanted)
    last_received = max(received, default=after)
    for offset in wanted:
        if offset not in seen:
            tally.add("lost", f"{name} never received offset {offset}")
            if offset < last_received:
                tally.add("gap", f"{name} received later events but not offset {offset}")
    for rid, answer in log.answers.items():
        if not any(o > after and e.response_id == rid for o, e in log.events):
            continue  # the answer ended before the client's start
        mine = folds.get(rid)
        if mine is None or mine.text != answer.text or mine.status != answer.status:
            got = "nothing" if mine is None else f"{mine.status} {len(mine.text)} chars"
            tally.add("text_mismatch", f"{name}, answer {rid}: {got}, log {answer.status} {len(answer.text)}")
        if answer.finished and terminals[rid] == 0:
            tally.add("terminal_missing", f"{name}, answer {rid}: no terminal event")
        if terminals[rid] > 1:
            tally.add("terminal_doubled", f"{name}, answer {rid}: {terminals[rid]} terminal events")
    return tally


def expected_text(conversation_id: str, prompt_id: str, text: str) -> str:
    """What the deterministic demo provider answers to the prompt (the worker's default model and
    parameters, as the chaos run submits it)."""
    return "".join(DEMO.answer_tokens(PromptSubmitted(conversation_id, prompt_id, "", text, 0)))


def regenerations(events: Iterable[TokenEvent]) -> int:
    """How often one answer was generated again: attempt-0 starts beyond the first, and restarts
    that threw accepted text away (folded by the reader rule, in log order)."""
    fold, starts, again = AnswerFold(""), 0, 0
    for event in events:
        if isinstance(event, ResponseStarted) and event.attempt == 0:
            starts += 1
            again += starts > 1
        elif fold.chunks and event.attempt > fold.attempt:
            restart = isinstance(event, ResponseStarted) or (
                isinstance(event, ResponseResumed) and event.mode is ResumeMode.RESTART
            )
            again += restart
        fold.apply(event)
    return again


def check_answers(log: LogSide, acknowledged: Mapping[str, str], *, conversation_id: str, name: str) -> Tally:
    """The conversation's log against its acknowledged prompts (``prompt_id -> text``)."""
    tally = Tally()
    for finding in log.findings:
        tally.add(FINDING_KINDS[finding.kind], f"{name}: {finding}")
    by_answer: dict[str, list[TokenEvent]] = {}
    for _, event in log.events:
        by_answer.setdefault(event.response_id, []).append(event)
    answered: dict[str, str] = {}
    for _, event in log.events:
        if isinstance(event, ResponseStarted):
            answered.setdefault(event.prompt_id, event.response_id)
    for prompt_id in sorted(set(answered) - set(acknowledged)):
        tally.add("unacknowledged_answer", f"{name}: an answer to prompt {prompt_id}, never acknowledged")
    for prompt_id, text in acknowledged.items():
        rid = answered.get(prompt_id)
        if rid is None:
            tally.add("unanswered", f"{name}: prompt {prompt_id} was acknowledged and never answered")
            continue
        again = regenerations(by_answer[rid])
        if again:
            tally.add("regenerated", f"{name}: prompt {prompt_id} answered {again + 1} times", again)
        answer = log.answers[rid]
        if answer.status is not Status.COMPLETED:
            tally.add("not_completed", f"{name}: prompt {prompt_id}'s answer is {answer.status}")
        want = expected_text(conversation_id, prompt_id, text)
        if answer.text != want:
            common = next(
                (i for i, (a, b) in enumerate(zip(answer.text, want, strict=False)) if a != b), None
            )
            at = common if common is not None else min(len(answer.text), len(want))
            tally.add(
                "wrong_text",
                f"{name}: prompt {prompt_id}: {len(answer.text)} chars, the demo's {len(want)}, "
                f"differing from char {at}",
            )
    tally.events_checked = len(log.events)
    return tally
