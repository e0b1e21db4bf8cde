"""The ownership rule (schemas.ownership) as a table, and the session reducer applying it."""

from __future__ import annotations

import pytest

from pipeline.sessions.snapshot import snapshot
from pipeline.sessions.state import LiveAnswer, Session, evolve_session
from schemas.ownership import Claim, decide, owner_after
from schemas.records import CancelRequested, PromptRecord, PromptSubmitted, ResponseStarted

C = "c-1"


def prompt(user: str, pid: str = "p-1") -> PromptSubmitted:
    return PromptSubmitted(C, pid, user, f"text of {user}", 1)


def cancel(user: str) -> CancelRequested:
    return CancelRequested(C, "x-1", user, 2)


@pytest.mark.parametrize(
    ("owner", "command", "claim", "after"),
    [
        (None, prompt("alice"), Claim.CLAIMS, "alice"),
        ("", prompt("alice"), Claim.CLAIMS, "alice"),
        ("alice", prompt("alice"), Claim.OWNERS, "alice"),
        ("alice", prompt("mallory"), Claim.STRANGER, "alice"),
        ("alice", prompt("Alice"), Claim.STRANGER, "alice"),  # user ids compare exactly
        (None, cancel("alice"), Claim.STRANGER, None),  # a cancel never claims
        ("alice", cancel("alice"), Claim.OWNERS, "alice"),
        ("alice", cancel("mallory"), Claim.STRANGER, "alice"),
    ],
)
def test_the_rule_decides_each_command_by_the_owner_known_before_it(
    owner: str | None, command: PromptRecord, claim: Claim, after: str | None
) -> None:
    assert decide(owner, command) is claim
    assert owner_after(owner, command) == after


def test_the_first_prompt_in_log_order_names_the_owner_whatever_follows() -> None:
    owner: str | None = None
    for command in (prompt("mallory"), prompt("alice"), cancel("alice"), prompt("mallory", "p-2")):
        owner = owner_after(owner, command)
    assert owner == "mallory"


def test_a_strangers_prompt_is_neither_pending_nor_owner_and_only_moves_the_offset() -> None:
    session = Session(C)
    session = evolve_session(session, prompt("alice"), 0)
    session = evolve_session(session, prompt("mallory", "p-2"), 1)
    assert session.owner == "alice"
    assert [p.prompt_id for p in session.pending] == ["p-1"]
    assert session.prompts_offset == 1
    session = evolve_session(session, prompt("alice", "p-3"), 2)
    assert [p.prompt_id for p in session.pending] == ["p-1", "p-3"]
    assert all("mallory" not in p.text for p in session.pending)


def test_a_strangers_prompt_first_in_the_log_makes_the_stranger_the_owner() -> None:
    session = evolve_session(Session(C), prompt("mallory"), 0)
    session = evolve_session(session, prompt("alice", "p-2"), 1)
    assert session.owner == "mallory"
    assert [p.prompt_id for p in session.pending] == ["p-1"]


def test_an_answer_applied_before_its_prompt_names_the_owner_and_a_strangers_prompt_is_ignored() -> None:
    # The tokens agent may apply the owner's ResponseStarted before the prompts agent applies
    # the prompts: the worker writes one only for the owner, so it names the same owner.
    started = ResponseStarted(C, "r-1", "p-1", "alice", "text of alice", "demo", 1)
    session = evolve_session(Session(C), started, 0)
    session = evolve_session(session, prompt("mallory", "p-9"), 0)
    assert session.owner == "alice"
    assert session.pending == ()


def test_the_snapshot_says_up_to_which_prompts_offset_its_owner_holds() -> None:
    session = evolve_session(Session(C), prompt("alice"), 5)
    body = snapshot(session, LiveAnswer(), epoch="e", partition=0, prompts_applied=9)
    assert (body["owner"], body["prompts_applied"]) == ("alice", 9)
    # The session's own last prompt counts when the partition's offset is not known here.
    assert snapshot(session, LiveAnswer(), epoch="e", partition=0)["prompts_applied"] == 5
    assert snapshot(Session(C), LiveAnswer(), epoch="e", partition=0)["prompts_applied"] == -1
