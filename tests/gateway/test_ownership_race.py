"""Ownership comes from the log: two users racing on a new conversation id through two gateway
processes end with exactly one owner, the user of the log's first prompt, and the other is
refused everywhere (real broker, worker, session app and gateways)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
import pytest
import websockets
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from schemas.codec import PROMPTS
from schemas.errors import DecodeError
from schemas.records import PromptSubmitted, ResponseStarted
from schemas.registry import PROMPTS_TOPIC
from tests.gateway.stack import GatewayProc, Stack, partition_of
from tests.harness import unique, wait_for
from tests.pipeline.helpers import all_finished, read_transcript

pytestmark = pytest.mark.integration

RACES = 20
QUICK = "[[tokens=4]] [[rate=0]]"


@dataclass
class Race:
    cid: str
    users: tuple[str, str]
    statuses: dict[str, list[int]] = field(default_factory=dict)
    """Per user, the status of each attempt of the first prompt (503s retried)."""

    def owners(self) -> list[str]:
        return [u for u, seen in self.statuses.items() if seen[-1] == 202]

    def canary(self, user: str) -> str:
        return f"canary-{user}-{self.cid}"


async def _first_prompt(http: httpx.AsyncClient, stack: Stack, race: Race, user: str) -> None:
    seen = race.statuses[user] = []
    for _ in range(5):  # 503: not settled in time; the same prompt_id again settles it
        response = await http.post(
            f"/v1/conversations/{race.cid}/prompts",
            json={"prompt_id": f"first-{user}", "text": f"{race.canary(user)} {QUICK}"},
            headers={"Authorization": f"Bearer {stack.token(user)}"},
        )
        seen.append(response.status_code)
        if response.status_code != 503:
            assert response.status_code in (202, 403), response.text
            return
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def _prompts_in_log(bootstrap: str, partitions: set[int]) -> dict[str, list[PromptSubmitted]]:
    """Every PromptSubmitted in ``partitions`` of conversation.prompts, by conversation, in log order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    found: dict[str, list[PromptSubmitted]] = defaultdict(list)
    try:
        tps = [TopicPartition(PROMPTS_TOPIC, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for msg in batch.get(tp, []):
                    try:
                        record = PROMPTS.decode(msg.value, partition=tp.partition, offset=msg.offset)
                    except DecodeError:
                        continue  # other tests' garbage records (test_bad_input) share the topic
                    if isinstance(record, PromptSubmitted):
                        found[record.conversation_id].append(record)
    finally:
        await consumer.stop()
    return found


async def _refused_everywhere(gw: GatewayProc, stack: Stack, race: Race, owner: str, other: str) -> list[str]:
    """Every route of ``gw`` for ``other`` on the owner's conversation: what was not a clean 403."""
    cid, token = race.cid, stack.token(other)
    auth = {"Authorization": f"Bearer {token}"}
    chat = {"id": cid, "messages": [{"role": "user", "id": "m-1", "parts": [{"type": "text", "text": "hi"}]}]}
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        events = f"/v1/conversations/{cid}/events"
        routes = {
            "GET snapshot": http.build_request("GET", f"/v1/conversations/{cid}", headers=auth),
            "SSE hydrate": http.build_request("GET", events, params={"access_token": token}),
            "SSE beginning": http.build_request("GET", events, params={"cursor": "beginning"}, headers=auth),
            "prompt": http.build_request(
                "POST", f"/v1/conversations/{cid}/prompts", json={"text": f"again {QUICK}"}, headers=auth
            ),
            "cancel": http.build_request("POST", f"/v1/conversations/{cid}/cancel", json={}, headers=auth),
            "POST /api/chat": http.build_request("POST", "/api/chat", json=chat, headers=auth),
            "GET /api/chat stream": http.build_request("GET", f"/api/chat/{cid}/stream", headers=auth),
        }
        for name, request in routes.items():
            response = await http.send(request, stream=True)
            try:
                if response.status_code == 403:
                    body = (await response.aread()).decode()
                    if response.json()["error"]["code"] != "forbidden":
                        wrong.append(f"{name}: 403 {body[:80]}")
                else:  # a stream that was let through: what it sends first
                    body = ""
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(3):
                            async for chunk in response.aiter_text():
                                body += chunk
                    wrong.append(f"{name}: {response.status_code}")
            finally:
                await response.aclose()
            if race.canary(owner) in body:
                wrong.append(f"{name}: the owner's text")
    url = gw.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws?access_token={token}"
    try:
        async with websockets.connect(url) as ws:
            await ws.send('{"type": "subscribe"}')
            frame = await asyncio.wait_for(ws.recv(), 10)
            wrong.append(f"WS: accepted, then {str(frame)[:60]}")
    except websockets.InvalidStatus as denied:
        if denied.response.status_code != 403:
            wrong.append(f"WS: {denied.response.status_code}")
        if race.canary(owner).encode() in (denied.response.body or b""):
            wrong.append("WS: the owner's text")
    return wrong


async def _race_and_check(stack: Stack, gws: tuple[GatewayProc, GatewayProc]) -> None:
    races = [
        Race(unique("race"), (f"alice-{i}-{unique('u')}", f"mallory-{i}-{unique('u')}")) for i in range(RACES)
    ]
    async with (
        httpx.AsyncClient(base_url=gws[0].url, timeout=60) as one,
        httpx.AsyncClient(base_url=gws[1].url, timeout=60) as two,
    ):
        for i, race in enumerate(races):  # both first prompts at once, each through its own gateway
            a, b = race.users if i % 2 == 0 else race.users[::-1]
            await asyncio.gather(_first_prompt(one, stack, race, a), _first_prompt(two, stack, race, b))
        summary = [race.statuses for race in races]
        doubles = sum(len(race.owners()) == 2 for race in races)
        assert all(len(race.owners()) == 1 for race in races), (
            f"{doubles} double owners of {RACES}: {summary}"
        )
        # The owner's next prompt: once it is answered, the worker has passed the other's prompt.
        for i, race in enumerate(races):
            [owner] = race.owners()
            response = await (one if i % 2 == 0 else two).post(
                f"/v1/conversations/{race.cid}/prompts",
                json={"prompt_id": "second", "text": f"{race.canary(owner)} {QUICK}"},
                headers={"Authorization": f"Bearer {stack.token(owner)}"},
            )
            assert response.status_code == 202, response.text

    in_log = await _prompts_in_log(stack.bootstrap, {partition_of(r.cid) for r in races})
    for race in races:
        [owner] = race.owners()
        other = next(u for u in race.users if u != owner)
        assert in_log[race.cid][0].user_id == owner, "the owner is the user of the log's first prompt"
        transcript = await read_transcript(
            stack.bootstrap, partition_of(race.cid), [race.cid], all_finished([f"first-{owner}", "second"])
        )
        started = [e for _, e in transcript.events if isinstance(e, ResponseStarted)]
        assert {e.user_id for e in started} == {owner}
        assert f"first-{other}" not in {e.prompt_id for e in started}, "the other's prompt was answered"
        for gw in gws:
            wrong = await _refused_everywhere(gw, stack, race, owner, other)
            assert not wrong, f"{other} on {gw.url}: {wrong}"

        async with httpx.AsyncClient(timeout=30) as http:
            as_owner = {"Authorization": f"Bearer {stack.token(owner)}"}

            async def shows_two_turns(race: Race = race, headers: dict[str, str] = as_owner) -> bool:
                body = (await http.get(f"{gws[0].url}/v1/conversations/{race.cid}", headers=headers)).json()
                return len(body.get("turns") or ()) == 2

            await wait_for(shows_two_turns, 60, 0.1)
            own = await http.get(f"{gws[1].url}/v1/conversations/{race.cid}", headers=as_owner)
        assert race.canary(owner) in own.text
        assert race.canary(other) not in own.text, "the other's prompt shows in the owner's conversation"


def test_two_users_racing_on_new_ids_through_two_gateways_get_exactly_one_owner_each(
    stack: Stack, gw: GatewayProc, gw2: GatewayProc
) -> None:
    asyncio.run(asyncio.wait_for(_race_and_check(stack, (gw, gw2)), 600))
