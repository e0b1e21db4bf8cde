"""The gateway's abuse limits without sockets: read budget, prompt limits, per-address counts,
back-pressure of a long catch-up, log redaction, settings checks, /api/chat's type checks."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from urllib.parse import quote

import pytest

from gateway.aisdk import last_user_prompt
from gateway.catchup import CatchUp
from gateway.connection import Connection
from gateway.entry import Entry, entry_of
from gateway.errors import GatewayError, InvalidRequest, SlowClient, TooManyReads, Unavailable
from gateway.guard import AddressCounts, refusal
from gateway.limits import PromptLimits, RateLimiter, ReadBudget
from gateway.models import PromptBody
from gateway.server import redact
from gateway.settings import GatewaySettings
from schemas.records import TokenDelta

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"  # noqa: S105 - a made-up JWT to redact


def test_a_user_over_the_read_budget_gets_too_many_reads_and_others_and_unnamed_reads_are_not_counted() -> (
    None
):
    budget = ReadBudget(per_user=2)
    with budget.hold("alice"), budget.hold("alice"):
        with pytest.raises(TooManyReads) as over, budget.hold("alice"):
            pass
        with budget.hold("bob"), budget.hold(None), budget.hold(None), budget.hold(None):
            assert budget.running("bob") == 1
    assert over.value.details["retry_after_s"] == 1.0
    assert budget.running("alice") == 0
    with budget.hold("alice"), budget.hold("alice"):  # released after an error too
        pass


def test_cancels_have_their_own_bucket_and_say_what_was_limited() -> None:
    cancels = RateLimiter(per_min=60, burst=2, what="cancels")
    cancels.take("u", now=0.0)
    cancels.take("u", now=0.0)
    with pytest.raises(Exception, match="cancels per minute") as over:
        cancels.take("u", now=0.0)
    assert 0 < over.value.details["retry_after_s"] <= 1.0  # type: ignore[attr-defined]
    cancels.take("u", now=1.0)


def test_a_prompt_may_name_only_an_allowed_model_and_a_bounded_max_tokens() -> None:
    limits = PromptLimits(frozenset({"tokenlog-demo-1"}), max_output_tokens=100)
    limits.check(PromptBody(text="hi"))
    limits.check(PromptBody(text="hi", model="tokenlog-demo-1", parameters={"max_tokens": 100}))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest) as model:
        limits.check(PromptBody(text="hi", model="o1-pro"))
    with pytest.raises(InvalidRequest) as tokens:
        limits.check(PromptBody(text="hi", parameters={"max_tokens": 101}))  # type: ignore[arg-type]
    assert (model.value.details["reason"], tokens.value.details["reason"]) == ("model", "max_tokens")
    assert model.value.status == 400


def test_the_default_model_allowlist_is_the_workers_models() -> None:
    assert set(GatewaySettings().models) == {"tokenlog-demo-1", "gpt-4o-mini"}
    env = {"TOKENLOG_DEMO_MODEL": "demo-2", "TOKENLOG_GATEWAY_SECRET": "s" * 32}
    assert GatewaySettings.from_env(env).models == ("demo-2", "gpt-4o-mini")
    assert GatewaySettings.from_env({"TOKENLOG_GATEWAY_MODELS": "a, b"}).models == ("a", "b")


def test_an_address_holds_at_most_its_cap_and_exempt_addresses_are_not_capped() -> None:
    counts = AddressCounts(cap=2, exempt=frozenset({"127.0.0.1"}))
    a, b, c = object(), object(), object()
    assert counts.admit("10.0.0.1", a)
    assert counts.admit("10.0.0.1", b)
    assert not counts.admit("10.0.0.1", c)
    assert all(counts.admit("127.0.0.1", object()) for _ in range(10))
    counts.release(a)
    counts.release(a)  # idempotent: an upgraded connection is released once
    assert counts.holding("10.0.0.1") == 1
    assert counts.admit("10.0.0.1", c)
    assert AddressCounts(cap=0).admit("10.0.0.1", a)


def test_a_refusal_is_a_complete_http_response_with_the_typed_error() -> None:
    from gateway.errors import RequestTimeout

    raw = refusal(RequestTimeout("slow"))
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head
    assert f"content-length: {len(body)}".encode() in head
    assert b'"code":"request_timeout"' in body


@pytest.mark.parametrize(
    "name",
    ["access_token", "access%5Ftoken", "%61ccess_token", "ACCESS%5ftoken", "access%255Ftoken", "token"],
)
def test_a_token_is_redacted_however_its_query_parameter_is_encoded(name: str) -> None:
    for value in (TOKEN, quote(TOKEN, safe=""), quote(quote(TOKEN, safe=""), safe="")):
        line = f'127.0.0.1:5555 - "WebSocket /v1/conversations/c-1/ws?{name}={value}&x=1" [accepted]'
        redacted = redact(line)
        assert TOKEN not in redacted
        assert TOKEN.split(".")[2] not in redacted
        assert "/v1/conversations/c-1/ws" in redacted
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]"
    assert redact("a line with 50% of nothing") == "a line with 50% of nothing"


def test_development_mode_refuses_a_non_loopback_bind_unless_overridden() -> None:
    keys = GatewaySettings(secret="s" * 32, service_token="t" * 32)
    replace(keys, dev_mode=True, host="127.0.0.1").check()
    replace(keys, dev_mode=False, host="0.0.0.0").check()  # noqa: S104
    with pytest.raises(ValueError, match="DEV_MODE_ALLOW_REMOTE"):
        replace(keys, dev_mode=True, host="0.0.0.0").check()  # noqa: S104
    replace(keys, dev_mode=True, host="0.0.0.0", dev_mode_allow_remote=True).check()  # noqa: S104


def test_the_gateway_refuses_to_start_without_the_session_apps_credential() -> None:
    with pytest.raises(ValueError, match="TOKENLOG_SERVICE_TOKEN"):
        GatewaySettings(secret="s" * 32, service_token="short").check()  # noqa: S106 - a test value


def test_the_accepted_hosts_are_loopback_names_with_any_port_and_the_allowlist() -> None:
    settings = GatewaySettings(port=8000, allowed_hosts=("Chat.Example", "api.example:8443"))
    for host in ("127.0.0.1", "127.0.0.1:8000", "127.0.0.1:8001", "localhost:5173", "[::1]", "[::1]:8000"):
        assert settings.host_allowed(host), host
    for host in ("CHAT.example", "chat.example:443", "api.example:8443"):
        assert settings.host_allowed(host), host
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "api.example:80"):
        assert not settings.host_allowed(host), host
    assert not settings.host_allowed("[::1]x")
    assert GatewaySettings(dev_mode=True).checks_host
    assert not GatewaySettings().checks_host
    assert GatewaySettings(allowed_hosts=("x",)).checks_host


@pytest.mark.parametrize(
    "parts",
    [5, "text", [5], [{"type": "text", "text": 5}], [{"type": "text", "text": ["a"]}]],
)
def test_type_confused_chat_parts_are_an_invalid_request_not_a_crash(parts: object) -> None:
    with pytest.raises(InvalidRequest):
        last_user_prompt([{"role": "user", "id": "m1", "parts": parts}])


def _entries(n: int) -> list[Entry]:
    return [entry_of(TokenDelta("c", "r", i, "t", 0, 0), epoch="e", partition=0, offset=i) for i in range(n)]


def test_a_long_catch_up_waits_for_room_and_a_client_that_reads_nothing_is_closed_as_slow() -> None:
    async def go() -> tuple[bool, bool, int, tuple[bool, GatewayError | None]]:
        conn = Connection("c", 0, "u", "sse", cap=8)
        conn.catching_up()
        conn.stream(_entries(6))
        waiting = asyncio.ensure_future(conn.room(6, timeout_s=5))
        await asyncio.sleep(0.01)
        blocked = not waiting.done()
        await conn.take(1, batch=4)  # the writer makes room: 2 left, 6 more fit
        fits = await asyncio.wait_for(waiting, 1)
        conn.stream(_entries(6))
        assert conn.queued <= conn.cap
        stalled = await conn.room(6, timeout_s=0.05)  # nobody reads: closed as slow
        return blocked, fits, conn.queued, (stalled, conn.error)

    blocked, fits, queued, (stalled, error) = asyncio.run(go())
    assert blocked
    assert fits
    assert queued == 0  # a slow client's queue is dropped (it resumes from its cursor)
    assert stalled is False
    assert isinstance(error, SlowClient)


def test_a_read_waits_a_bounded_time_for_a_catch_up_consumer_and_says_nothing_of_kafka() -> None:
    async def go() -> Unavailable:
        pool = CatchUp("127.0.0.1:1", size=0, timeout_s=5, partitions=[0], acquire_timeout_s=0.05)
        with pytest.raises(Unavailable) as busy:
            await pool.bounds(0)
        return busy.value

    error = asyncio.run(go())
    assert "busy" in error.message
    assert "Kafka" not in error.message
    assert "Error" not in error.message
