"""How a gateway learns and checks owners (gateway/ownership.py, service.Gateway), without I/O:
the session app is a scripted stand-in (the real path is tests/gateway/test_ownership_race.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from gateway.auth import Identity
from gateway.connection import Connection
from gateway.errors import Forbidden, Unavailable
from gateway.ownership import Owners
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from gateway.snapshots import Snapshot
from schemas.cursor import Cursor

CID = "c-1"
ALICE, MALLORY = Identity("alice", 2**40), Identity("mallory", 2**40)


class SessionApp:
    """Answers ``owner_as_of`` from a script, one answer a call (the last one repeats)."""

    def __init__(self, *answers: tuple[str, int] | None) -> None:
        self._answers: Iterator[tuple[str, int] | None] = iter(answers)
        self._last: tuple[str, int] | None = None
        self.calls = 0

    async def owner_as_of(self, conversation_id: str, partition: int) -> tuple[str, int] | None:
        self.calls += 1
        self._last = next(self._answers, self._last)
        return self._last


def _gateway(app: Any = None, wait_s: float = 2.0) -> Gateway:
    gw = Gateway(replace(GatewaySettings(), owner_wait_s=wait_s))
    gw._snapshots = app
    return gw


def _snap(owner: str = "", **body: Any) -> Snapshot:
    return Snapshot({"conversation_id": CID, "owner": owner, **body}, Cursor("e", 0, 9), "snapshot", True)


def test_an_authoritative_owner_replaces_a_contradicted_cache_entry() -> None:
    owners = Owners()
    assert owners.learn(CID, "mallory") == "mallory"
    assert owners.learn(CID, "alice") == "alice"
    assert owners.get(CID) == "alice"


async def test_a_new_conversations_prompt_is_settled_only_once_the_session_app_has_applied_it() -> None:
    app = SessionApp(None, ("", 3), ("alice", 4), ("alice", 5))  # down, behind, behind, past offset 5
    gw = _gateway(app)
    await gw._settle(CID, 0, ALICE, 5)
    assert app.calls == 4
    assert gw.owners.get(CID) == "alice"
    with pytest.raises(Forbidden):  # known now: the other user is refused at once
        await gw._settle(CID, 0, MALLORY, 6)


async def test_the_user_who_did_not_write_first_is_refused_when_the_prompt_settles() -> None:
    gw = _gateway(SessionApp(("alice", 8)))
    with pytest.raises(Forbidden):
        await gw._settle(CID, 0, MALLORY, 8)


async def test_an_owner_that_cannot_be_told_in_time_is_503_with_retry_after() -> None:
    gw = _gateway(SessionApp(("", 2)), wait_s=0.2)
    with pytest.raises(Unavailable) as unsettled:
        await gw._settle(CID, 0, ALICE, 5)
    assert unsettled.value.details["retry_after_s"] >= 1
    assert gw.owners.get(CID) is None  # nothing learned from the caller's own write


async def test_an_answer_started_meanwhile_settles_the_owner_without_the_session_app() -> None:
    gw = _gateway(SessionApp(None))
    gw.owners.learn(CID, "alice")  # what the hub learns from a ResponseStarted
    with pytest.raises(Forbidden):
        await gw._settle(CID, 0, MALLORY, 5)


async def test_the_snapshot_route_checks_the_snapshots_owner_whatever_the_cache_says() -> None:
    gw = _gateway()
    gw.owners.learn(CID, "mallory")  # a wrong entry, however it got there

    async def snapshot(conversation_id: str, upto: int | None = None) -> Snapshot:
        snap = _snap("alice", turns=[{"prompt_text": "alice's secret"}])
        gw.owners.learn(conversation_id, snap.owner)  # as Gateway.snapshot does
        return snap

    gw.snapshot = snapshot  # type: ignore[method-assign]
    with pytest.raises(Forbidden):
        await gw.read(CID, MALLORY)
    assert (await gw.read(CID, ALICE)).owner == "alice"


def test_a_snapshot_with_content_but_no_owner_is_refused_to_everyone() -> None:
    gw = _gateway()
    conn = Connection(CID, 0, "alice", "sse", 8)
    contents: list[dict[str, Any]] = [{"turns": [{}]}, {"live": {"answer": "x"}}, {"pending": [{}]}]
    for content in contents:
        with pytest.raises(Unavailable):
            gw._check_owner(conn, _snap("", **content))
    gw._check_owner(conn, _snap(""))  # nothing in it: nothing to refuse
    assert not conn.verified_owner
