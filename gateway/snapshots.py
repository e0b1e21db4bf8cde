"""Snapshots for hydrating a device: from the session-state service, else rebuilt from the log.

The session service answers ``GET /sessions/{cid}`` with the snapshot and its cursor, or 404 with
the cursor up to which it has applied the partition (the conversation has no event at or before
it). When it does not answer (not started yet, recovering, unreachable) or cannot place an
unknown conversation, the gateway reads the conversation's events from the log and folds them
with the session service's own reducers (``pipeline.sessions.state``): the same snapshot, at a
cost that grows with the partition (the fallback, not the normal path).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.catchup import CatchUp
from gateway.errors import Unavailable
from pipeline.sessions.snapshot import snapshot
from pipeline.sessions.state import LiveAnswer, Session, evolve_live, evolve_session
from schemas.codec import TOKENS
from schemas.cursor import Cursor, parse
from schemas.errors import CursorError, DecodeError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    body: dict[str, Any]
    """The snapshot contract of ``pipeline/sessions/snapshot.py``."""
    cursor: Cursor
    source: str
    """``snapshot`` (the session service) or ``log``."""
    exists: bool
    """False for a conversation nothing has been written to yet."""

    @property
    def owner(self) -> str:
        return str(self.body.get("owner") or "")

    @property
    def has_content(self) -> bool:
        """Turns, a live answer or pending prompts: something only its owner may see."""
        return bool(self.body.get("turns") or self.body.get("live") or self.body.get("pending"))


class Snapshots:
    def __init__(
        self,
        *,
        sessions_url: str,
        service_token: str,
        timeout_s: float,
        epoch: str,
        catchup: CatchUp,
        position: Callable[[int], int],
    ) -> None:
        self._url = sessions_url
        self._epoch = epoch
        self._catchup = catchup
        self._position = position
        self._http = httpx.AsyncClient(
            timeout=timeout_s, headers={"Authorization": f"Bearer {service_token}"}
        )
        self.sessions_ok: bool | None = None

    async def close(self) -> None:
        await self._http.aclose()

    async def get(self, conversation_id: str, partition: int) -> Snapshot:
        found = await self._from_sessions(conversation_id, partition)
        if found is not None:
            return found
        return await self.from_log(conversation_id, partition)

    async def _from_sessions(self, conversation_id: str, partition: int) -> Snapshot | None:
        try:
            response = await self._http.get(f"{self._url}/sessions/{conversation_id}")
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.sessions_ok = False
            log.info("session service unavailable (%s); hydrating from the log", type(exc).__name__)
            return None
        self.sessions_ok = response.status_code in (200, 404)
        if response.status_code not in (200, 404) or not isinstance(body, dict):
            return None
        try:
            cursor = parse(body.get("cursor") or "")
        except CursorError:
            return None  # a 404 from a worker that has applied nothing in the partition yet
        if not isinstance(cursor, Cursor) or cursor.epoch != self._epoch or cursor.partition != partition:
            log.warning("session service snapshot at %s does not fit this log; using the log", cursor)
            return None
        if response.status_code == 404:
            empty = snapshot(
                Session(conversation_id),
                LiveAnswer(),
                epoch=self._epoch,
                partition=partition,
                applied_upto=cursor.last_offset,
            )
            return Snapshot(empty, cursor, "snapshot", exists=False)
        return Snapshot(body, cursor, "snapshot", exists=True)

    async def owner_as_of(self, conversation_id: str, partition: int) -> tuple[str, int] | None:
        """The session app's owner of the conversation ("" for none yet) and the prompts offset
        it holds as of (``prompts_applied``, -1 unknown); None when the app does not answer."""
        try:
            response = await self._http.get(f"{self._url}/sessions/{conversation_id}")
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        if response.status_code not in (200, 404) or not isinstance(body, dict):
            return None
        if body.get("partition") != partition:
            return None
        applied = body.get("prompts_applied")
        owner = body.get("owner") if response.status_code == 200 else ""
        if not isinstance(applied, int) or not isinstance(owner, str):
            return None  # a session app from before prompts_applied
        return owner, applied

    async def from_log(self, conversation_id: str, partition: int) -> Snapshot:
        upto = self._position(partition)
        start, _ = await self._catchup.bounds(partition)
        read = await self._catchup.read(partition, conversation_id.encode(), start, upto)
        if not read.complete:
            raise Unavailable("the log read for the snapshot did not complete")
        session, live = Session(conversation_id), LiveAnswer()
        for offset, value in read.records:
            try:
                event = TOKENS.decode(value, partition=partition, offset=offset)
            except DecodeError:
                continue
            session = evolve_session(session, event, offset, live_before=live)
            live = evolve_live(live, event, offset)
        body = snapshot(session, live, epoch=self._epoch, partition=partition, applied_upto=upto)
        cursor = Cursor(self._epoch, partition, max(upto, session.tokens_offset, live.tokens_offset))
        return Snapshot(body, cursor, "log", exists=bool(read.records))
