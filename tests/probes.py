"""Black-box probes of issue 21 against a running tokenlog (``make run``), as a stranger would.

Run with the project's virtualenv (uses only httpx and websockets):

    make run &                                     # wait for "ready — press Ctrl-C"
    .venv/bin/python -m tests.probes --checkout .
    .venv/bin/python -m tests.probes --only headers,host_header

Every probe prints one line:  PROBE <name>: <OK|BAD|ERROR> <what was seen> (<numbers>)
  OK    = behaves as issue 21 asks ("Must show"), BAD = the finding is still there,
  ERROR = the probe itself could not run (its exception is printed).
Loopback only (plus the machine's own non-loopback address for the session-port probe), bounded
in count and time (the whole run takes about 3-5 minutes), and it stops by itself.

Destructive probes: ``marker_poison`` on an unfixed build makes the worker build 10^8 demo tokens
(about 70 s of a blocked event loop and ~13 GB); ``size`` crashes the unfixed session app (and,
under the old ``make run``, every service). By default they run last (marker_poison, then size);
``--poison-tokens`` scales the first down on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

ORDER = [
    "session_port",
    "snapshot_trail",
    "ownership_race",
    "cancel_flood",
    "model_max_tokens",
    "host_header",
    "slowloris",
    "redaction",
    "chunked_body",
    "headers",
    "chat_type",
    "chat_expiry",
    "marker_poison",  # destructive on an unfixed build: next to last
    "size",  # destructive on an unfixed build (the old make run stops everything): last
]
NUMBERS = {
    "size": 1,
    "session_port": 2,
    "snapshot_trail": 3,
    "marker_poison": 4,
    "ownership_race": 5,
    "cancel_flood": 6,
    "model_max_tokens": 7,
    "host_header": 8,
    "slowloris": 9,
    "redaction": 10,
    "chunked_body": 11,
    "headers": 12,
    "chat_type": 13,
    "chat_expiry": 14,
}
QUICK = " [[tokens=3]] [[rate=0]]"


@dataclass
class Ctx:
    gateway: str
    sessions: str
    worker: str
    log_dir: Path
    poison_tokens: int
    http: httpx.AsyncClient
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    async def send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request, sent again once if a kept-alive connection turned out closed (the server
        may close it after a 500); used only for idempotent requests (tokens, GETs, prompts with a
        prompt_id)."""
        try:
            return await self.http.request(method, url, **kw)
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            return await self.http.request(method, url, **kw)

    def uid(self, name: str) -> str:
        return f"{name}-{self.nonce}"

    def cid(self, name: str) -> str:
        return f"c-{name}-{self.nonce}-{uuid.uuid4().hex[:8]}"

    async def token(self, user: str, ttl_s: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"user_id": user}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        r = await self.send("POST", f"{self.gateway}/v1/dev/token", json=body)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    async def tok(self, user: str) -> str:
        return str((await self.token(user))["token"])

    async def prompt(
        self,
        token: str,
        cid: str,
        text: str,
        *,
        prompt_id: str | None = None,
        retry_429_s: float = 0.0,
        raw_utf8: bool = False,
        **extra: Any,
    ) -> httpx.Response:
        """POST a prompt; on 429 waits Retry-After and tries again while within ``retry_429_s``."""
        body: dict[str, Any] = {"text": text, **extra}
        if prompt_id is not None:
            body["prompt_id"] = prompt_id
        content = json.dumps(body, ensure_ascii=not raw_utf8).encode()
        deadline = time.monotonic() + retry_429_s
        while True:
            r = await self.send(
                "POST",
                f"{self.gateway}/v1/conversations/{cid}/prompts",
                content=content,
                headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            )
            if r.status_code != 429 or time.monotonic() >= deadline:
                return r
            wait = float(r.headers.get("retry-after", "1"))
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))

    async def snapshot(self, token: str, cid: str) -> httpx.Response:
        return await self.send(
            "GET", f"{self.gateway}/v1/conversations/{cid}", headers={"authorization": f"Bearer {token}"}
        )

    async def wait_turns(self, token: str, cid: str, n: int, timeout_s: float) -> dict[str, Any] | None:
        """The snapshot once it holds ``n`` finished turns (None: not within ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        refused = 0
        while time.monotonic() < deadline and refused < 5:  # 5 refusals in a row: the gateway is gone
            try:
                r = await self.snapshot(token, cid)
            except httpx.ConnectError:
                refused += 1
            except httpx.HTTPError:
                pass
            else:
                refused = 0
                if r.status_code == 200:
                    last = r.json()
                    done = [t for t in last.get("turns", []) if t.get("status") != "streaming"]
                    if len(done) + int(last.get("dropped_turns", 0)) >= n:
                        return last
            await asyncio.sleep(0.25)
        return None


def err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}".replace("\n", " ")


def verdict(ok: bool) -> str:
    return "OK" if ok else "BAD"


async def answer_of(c: Ctx, url: str, timeout: float = 3.0, **kw: Any) -> str:  # noqa: ASYNC109 - an HTTP timeout
    """The status of GET url, or why there was none."""
    try:
        r = await c.http.get(url, timeout=timeout, **kw)
        return str(r.status_code)
    except httpx.ConnectError:
        return "refused"
    except httpx.HTTPError as exc:
        return type(exc).__name__


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- 1. size


async def probe_size(c: Ctx) -> str:
    user = c.uid("size")
    token = await c.tok(user)
    cid = c.cid("size")
    n, total = 40, 32_000
    statuses: Counter[str] = Counter()
    accepted = 0
    first_error = ""
    largest_body = 0
    t0 = time.monotonic()
    conn_errors = 0
    for i in range(n):
        head = f"P{i:02d} "
        text = head + "é" * (total - len(head) - len(QUICK)) + QUICK
        body = json.dumps({"prompt_id": f"p-{i}", "text": text}, ensure_ascii=False).encode()
        largest_body = max(largest_body, len(body))
        try:
            r = await c.prompt(token, cid, text, prompt_id=f"p-{i}", retry_429_s=30.0, raw_utf8=True)
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1
            first_error = first_error or f"prompt {i}: {err(exc)}"
            conn_errors += 1
            if conn_errors >= 3:  # the gateway is gone; the rest would fail the same way
                statuses["not_sent"] += n - i - 1
                break
            await asyncio.sleep(1.0)
            continue
        conn_errors = 0
        statuses[str(r.status_code)] += 1
        if r.status_code == 202:
            accepted += 1
        elif not first_error:
            first_error = f"prompt {i}: {r.status_code} {r.text[:120]}"
    send_s = time.monotonic() - t0
    snap = await c.wait_turns(token, cid, n, timeout_s=60.0) if accepted else None
    turns = full = 0
    snap_status = "?"
    if snap is None:
        with contextlib.suppress(httpx.HTTPError):
            r = await c.snapshot(token, cid)
            snap_status = str(r.status_code)
            if r.status_code == 200:
                snap = r.json()
    else:
        snap_status = "200"
    if snap is not None:
        ids = {f"p-{i}" for i in range(n)}
        mine = [t for t in snap.get("turns", []) if t.get("prompt_id") in ids]
        turns = len([t for t in mine if t.get("status") != "streaming"])
        full = len([t for t in mine if len(t.get("prompt_text", "")) == total])
    sessions_tcp = tcp_open(*host_port(c.sessions))
    sessions_http = await answer_of(c, f"{c.sessions}/readyz")
    worker = await answer_of(c, f"{c.worker}/readyz")
    gateway = await answer_of(c, f"{c.gateway}/healthz")
    ok = (
        accepted == n
        and turns == n
        and sessions_tcp
        and sessions_http != "refused"
        and worker == "200"
        and gateway == "200"
    )
    seen = (
        f"{accepted}/{n} prompts accepted, {turns}/{n} turns in the snapshot; session app "
        f"{'up' if sessions_tcp else 'DOWN (connection refused)'}"
    )
    if first_error:
        seen += f"; first refusal: {first_error}"
    return (
        f"{verdict(ok)} {seen} (statuses={dict(statuses)} largest_body={largest_body}B "
        f"send={send_s:.1f}s snapshot={snap_status} turns_with_full_text={full} "
        f"sessions_tcp={'open' if sessions_tcp else 'refused'} sessions_readyz={sessions_http} "
        f"worker_readyz={worker} gateway_healthz={gateway})"
    )


def host_port(url: str) -> tuple[str, int]:
    u = httpx.URL(url)
    return u.host, u.port or 80


# --------------------------------------------------------------------------- 2. session port


def listeners(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    out: list[str] = []
    for name, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                parts = line.split()
                local, state = parts[1], parts[3]
                addr_hex, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:
                    continue
                raw = bytes.fromhex(addr_hex)
                if v6:
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    out.append("[" + socket.inet_ntop(socket.AF_INET6, raw) + "]")
                else:
                    out.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return sorted(set(out))


def own_addresses() -> list[str]:
    """The machine's non-loopback IPv4 addresses (LOCAL host routes in /proc/net/fib_trie)."""
    found: list[str] = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return found
    for prev, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            addr = prev.strip().lstrip("|-+ ").strip()
            if addr and not addr.startswith("127.") and addr not in found:
                found.append(addr)
    return found


async def probe_session_port(c: Ctx) -> str:
    host, port = host_port(c.sessions)
    bound = listeners(port)
    user = c.uid("owner2")
    token = await c.tok(user)
    cid = c.cid("port")
    canary = f"CANARY-{uuid.uuid4().hex[:12]}"
    r = await c.prompt(token, cid, canary + " [[tokens=5]] [[rate=0]]", prompt_id="p-1", retry_429_s=10)
    if r.status_code != 202:
        return f"ERROR the canary prompt was refused ({r.status_code} {r.text[:100]})"
    await c.wait_turns(token, cid, 1, timeout_s=15)
    paths = [f"/sessions/{cid}", "/router/", "/table/", f"/table/sessions/{cid}/"]
    # Give the session app time to apply the turn (it trails the log by up to ~0.5 s): poll its
    # snapshot route until it answers something other than 404, at most 5 s.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            s = await c.http.get(f"http://{host}:{port}{paths[0]}", timeout=3)
            if s.status_code != 404:
                break
        await asyncio.sleep(0.25)

    async def fetch(h: str) -> tuple[list[str], int]:
        shown, leaks = [], 0
        for p in paths:
            try:
                s = await c.http.get(f"http://{h}:{port}{p}", timeout=3)
            except httpx.ConnectError:
                shown.append(f"{p.replace(cid, '<cid>')}=refused")
                continue
            except httpx.HTTPError as exc:
                shown.append(f"{p.replace(cid, '<cid>')}={type(exc).__name__}")
                continue
            has_canary, has_owner = canary in s.text, user in s.text
            leaks += 1 if (has_canary or has_owner) else 0
            shown.append(
                f"{p.replace(cid, '<cid>')}={s.status_code}"
                f"{' CANARY' if has_canary else ''}{' OWNER' if has_owner else ''}"
                f"{f' {len(s.content)}B' if s.status_code == 200 else ''}"
            )
        return shown, leaks

    lo, lo_leaks = await fetch(host)
    others = own_addresses()
    ext_txt, ext_leaks, ext_open = "no non-loopback address", 0, False
    if others:
        ext, ext_leaks = await fetch(others[0])
        ext_open = any(not x.endswith("=refused") for x in ext)
        ext_txt = f"{others[0]}: " + (", ".join(ext) if ext_open else "connection refused (closed)")
    wide = [b for b in bound if not (b.startswith("127.") or b == "[::1]")]
    codes = [x.split("=", 1)[1].split()[0] for x in lo]
    ok = (
        not wide
        and lo_leaks == 0
        and ext_leaks == 0
        and not ext_open
        and all(x in ("401", "403") for x in codes)
    )
    seen = (
        f"listening on {', '.join(bound) or 'nothing'}; without a credential "
        f"{lo_leaks} of {len(paths)} routes on {host} returned the canary or owner"
    )
    return f"{verdict(ok)} {seen} (loopback: {', '.join(lo)}; {ext_txt})"


# --------------------------------------------------------------------------- 3. snapshot trails


async def sse_events(
    c: Ctx, token: str, cid: str, cursor: str | None, opened: asyncio.Event | None = None
) -> AsyncIterator[dict[str, Any]]:
    params = {"cursor": cursor} if cursor else {}
    async with c.http.stream(
        "GET",
        f"{c.gateway}/v1/conversations/{cid}/events",
        params=params,
        headers={"authorization": f"Bearer {token}", "accept": "text/event-stream"},
        timeout=httpx.Timeout(10.0, read=20.0),
    ) as r:
        if r.status_code != 200:
            raise RuntimeError(f"SSE answered {r.status_code}: {(await r.aread())[:120]!r}")
        if opened is not None:
            opened.set()
        data: list[str] = []
        event_name = ""
        async for line in r.aiter_lines():
            if line == "":
                if data:
                    doc = json.loads("\n".join(data))
                    if event_name and "type" not in doc:
                        doc["type"] = event_name
                    yield doc
                data, event_name = [], ""
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif line.startswith("event:"):
                event_name = line[6:].strip()


async def probe_snapshot_trail(c: Ctx) -> str:
    user = c.uid("trail")
    token = await c.tok(user)
    cid = c.cid("trail")
    n = 20
    cursor: str | None = "beginning"
    trailed, errors = 0, 0
    lags: list[float] = []
    never = 0
    first_diff = ""
    for i in range(n):
        r = await c.prompt(
            token, cid, f"trail {i} [[tokens=30]] [[rate=100]]", prompt_id=f"p-{i}", retry_429_s=20
        )
        if r.status_code != 202:
            errors += 1
            first_diff = first_diff or f"prompt {i}: {r.status_code} {r.text[:100]}"
            continue
        rid = r.json()["response_id"]
        seqs: dict[int, str] = {}
        done = False
        try:
            async with asyncio.timeout(20):
                async for ev in sse_events(c, token, cid, cursor):
                    kind = ev.get("type")
                    if ev.get("response_id") != rid:
                        continue
                    if kind == "token":
                        seqs[int(ev["seq"])] = ev["text"]
                    elif kind == "response.resumed" and ev.get("mode", "").upper().endswith("RESTART"):
                        seqs.clear()
                    elif kind in ("response.failed", "response.cancelled"):
                        raise RuntimeError(f"answer {i} ended {kind}")
                    elif kind == "response.completed":
                        cursor = ev.get("cursor") or cursor
                        done = True
                        break
        except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
            errors += 1
            first_diff = first_diff or f"answer {i}: {err(exc)}"
            continue
        if not done:
            errors += 1
            continue
        streamed = "".join(seqs[k] for k in sorted(seqs))
        t0 = time.monotonic()
        matched_at: float | None = None
        first = True
        while time.monotonic() - t0 < 3.0:
            s = await c.snapshot(token, cid)
            turns = s.json().get("turns", []) if s.status_code == 200 else []
            last = turns[-1] if turns else {}
            same = last.get("response_id") == rid and last.get("answer") == streamed
            if same:
                matched_at = time.monotonic() - t0
                break
            if first:
                trailed += 1
                if not first_diff:
                    got = last.get("answer", "") if last.get("response_id") == rid else "<turn absent>"
                    first_diff = f"answer {i}: streamed {len(streamed)} chars, snapshot {len(got)}"
            first = False
            await asyncio.sleep(0.05)
        if matched_at is None:
            never += 1
        elif not first:
            lags.append(matched_at)
    lag_txt = (
        f"lag_until_equal median={statistics.median(lags):.2f}s max={max(lags):.2f}s"
        if lags
        else "lag_until_equal=-"
    )
    ok = trailed == 0 and errors == 0
    note = f"; first: {first_diff}" if first_diff else ""
    return (
        f"{verdict(ok)} {trailed} of {n} snapshots fetched at response.completed lacked the streamed "
        f"answer{note} (trailed={trailed} never_equal_within_3s={never} probe_errors={errors} {lag_txt})"
    )


# --------------------------------------------------------------------------- 4. marker poison


async def time_readyz(c: Ctx, n: int = 10) -> tuple[int, float, int]:
    """(answered 200, slowest seconds, timeouts or errors) over n probes of the worker's /readyz."""
    ok, slowest, bad = 0, 0.0, 0
    for _ in range(n):
        t0 = time.monotonic()
        try:
            r = await c.http.get(f"{c.worker}/readyz", timeout=2.0)
            ok += r.status_code == 200
        except httpx.HTTPError:
            bad += 1
        slowest = max(slowest, time.monotonic() - t0)
        await asyncio.sleep(0.3)
    return ok, slowest, bad


async def probe_marker_poison(c: Ctx) -> str:
    user = c.uid("poison")
    token = await c.tok(user)
    big_cid, slow_cid = c.cid("poison-tokens"), c.cid("poison-rate")
    big = await c.prompt(token, big_cid, f"big [[tokens={c.poison_tokens}]]", prompt_id="p-1")
    slow = await c.prompt(token, slow_cid, "slow [[rate=0.0001]]", prompt_id="p-1")

    def code(r: httpx.Response) -> str:
        try:
            return f"{r.status_code} {r.json()['error']['code']}"
        except (ValueError, KeyError, TypeError):
            return str(r.status_code)

    readyz = "not timed (neither accepted)"
    if 202 in (big.status_code, slow.status_code):
        await asyncio.sleep(2.0)  # the worker takes the prompts
        ok, slowest, bad = await time_readyz(c)
        readyz = (
            f"worker /readyz after: {ok}/10 answered 200, {bad} timed out (2 s) or failed, "
            f"slowest {slowest:.2f}s"
        )
        if slow.status_code == 202:  # release the answer slot it holds (no effect on a blocked loop)
            with contextlib.suppress(httpx.HTTPError):
                await c.http.post(
                    f"{c.gateway}/v1/conversations/{slow_cid}/cancel",
                    json={},
                    headers={"authorization": f"Bearer {token}"},
                )
    ok_all = big.status_code == 400 and slow.status_code == 400
    return (
        f"{verdict(ok_all)} [[tokens={c.poison_tokens}]] -> {code(big)}, [[rate=0.0001]] -> {code(slow)} "
        f"(expected 400 for both; {readyz})"
    )


# --------------------------------------------------------------------------- 5. ownership race


async def probe_ownership_race(c: Ctx) -> str:
    alice, mallory = c.uid("alice"), c.uid("mallory")
    ta, tm = await c.tok(alice), await c.tok(mallory)
    n = 20
    races: list[tuple[str, str, str, int, int]] = []
    for i in range(n):
        cid = c.cid(f"race{i}")
        ca, cm = f"CANARY-A-{uuid.uuid4().hex[:10]}", f"CANARY-M-{uuid.uuid4().hex[:10]}"
        ra, rm = await asyncio.gather(
            c.prompt(ta, cid, ca + QUICK, prompt_id="p-a"), c.prompt(tm, cid, cm + QUICK, prompt_id="p-m")
        )
        races.append((cid, ca, cm, ra.status_code, rm.status_code))
    both = sum(1 for *_, a, m in races if a == 202 and m == 202)
    pairs = Counter(f"{a}/{m}" for *_, a, m in races)
    # Let every answer land (up to ~20 s in all), then read each id as the other user.
    deadline = time.monotonic() + 20
    m_reads: Counter[str] = Counter()
    a_reads: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    read_leak = injected = 0
    for cid, ca, cm, _, _ in races:
        while time.monotonic() < deadline:
            sa, sm = await c.snapshot(ta, cid), await c.snapshot(tm, cid)
            if 200 in (sa.status_code, sm.status_code):
                body = (sa if sa.status_code == 200 else sm).json()
                if not body.get("pending") and not body.get("live"):
                    break
            await asyncio.sleep(0.25)
        sa, sm = await c.snapshot(ta, cid), await c.snapshot(tm, cid)
        m_reads[str(sm.status_code)] += 1
        a_reads[str(sa.status_code)] += 1
        # mallory's GET answered 200 with alice's canary in it (the probe's question); an injection:
        # one snapshot holds both users' prompts.
        owner = ""
        for s in (sa, sm):
            if s.status_code == 200:
                owner = str(s.json().get("owner", ""))
                break
        owners[
            "alice"
            if owner == alice
            else "mallory"
            if owner == mallory
            else repr(owner)
            if owner
            else "unreadable"
        ] += 1
        read_leak += sm.status_code == 200 and ca in sm.text
        injected += any(s.status_code == 200 and ca in s.text and cm in s.text for s in (sa, sm))
    ok = read_leak == 0 and injected == 0
    return (
        f"{verdict(ok)} {both} of {n} ids accepted both users' first prompts (202/202); "
        "the other user's prompt "
        f"landed in the owner's conversation on {injected} (injection); "
        "mallory's GET returned alice's canary on "
        f"{read_leak} (alice/mallory prompt statuses={dict(pairs)} mallory GET={dict(m_reads)} "
        f"alice GET={dict(a_reads)} owner={dict(owners)}; expected: exactly one owner, the other refused)"
    )


# --------------------------------------------------------------------------- 6. cancel flood


async def probe_cancel_flood(c: Ctx) -> str:
    user = c.uid("cancel")
    token = await c.tok(user)
    cid = c.cid("cancel")
    r = await c.prompt(token, cid, "to cancel [[tokens=3]] [[rate=0]]", prompt_id="p-1", retry_429_s=10)
    if r.status_code != 202:
        return f"ERROR the first prompt was refused ({r.status_code})"
    hist: Counter[str] = Counter()
    t0 = time.monotonic()
    for _ in range(200):
        try:
            x = await c.http.post(
                f"{c.gateway}/v1/conversations/{cid}/cancel",
                json={},
                headers={"authorization": f"Bearer {token}"},
            )
            hist[str(x.status_code)] += 1
        except httpx.HTTPError as exc:
            hist[type(exc).__name__] += 1
    took = time.monotonic() - t0
    ok = hist.get("429", 0) > 0
    return (
        f"{verdict(ok)} 200 cancels in {took:.1f}s: {hist.get('202', 0)} accepted, "
        f"{hist.get('429', 0)} rate-limited "
        f"(statuses={dict(sorted(hist.items()))}; expected 429 once the cancel budget is spent)"
    )


# --------------------------------------------------------------------------- 7. model / max_tokens


async def probe_model_max_tokens(c: Ctx) -> str:
    user = c.uid("model")
    token = await c.tok(user)
    model = f"m-{uuid.uuid4()}"
    r1 = await c.prompt(token, c.cid("model"), "which model?" + QUICK, prompt_id="p-1", model=model)
    r2 = await c.prompt(
        token, c.cid("maxtok"), "how long?" + QUICK, prompt_id="p-1", parameters={"max_tokens": 1_000_000}
    )

    def code(r: httpx.Response) -> str:
        try:
            return f"{r.status_code} {r.json()['error']['code']}"
        except (ValueError, KeyError, TypeError):
            return str(r.status_code)

    ok = r1.status_code == 400 and r2.status_code == 400
    return (
        f"{verdict(ok)} model={model[:14]}... -> {code(r1)}; max_tokens=1000000 -> {code(r2)} "
        "(expected 400 for both)"
    )


# --------------------------------------------------------------------------- 8. Host header


async def probe_host_header(c: Ctx) -> str:
    r = await c.http.post(
        f"{c.gateway}/v1/dev/token",
        json={"user_id": c.uid("rebind")},
        headers={"host": "attacker.example:8000", "origin": "http://attacker.example:8000"},
    )
    got = False
    with contextlib.suppress(ValueError):
        got = isinstance(r.json(), dict) and bool(r.json().get("token"))
    ok = r.status_code in (400, 403, 421) and not got
    return (
        f"{verdict(ok)} POST /v1/dev/token with Host: attacker.example:8000 -> {r.status_code}, "
        f"token {'RETURNED' if got else 'not returned'} (expected a refusal and no token)"
    )


# --------------------------------------------------------------------------- 9. slowloris


def still_open(s: socket.socket) -> bool:
    """True while the peer has neither closed nor answered (a timeout answer counts as closing)."""
    try:
        s.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # b"": closed; data: the server answered (e.g. 408) and will close


async def probe_slowloris(c: Ctx) -> str:
    host, port = host_port(c.gateway)
    socks: list[socket.socket] = []
    refused = 0
    # /healthz is asked from another loopback address (another client, as a per-address cap sees it)
    other = httpx.AsyncClient(
        timeout=5.0, trust_env=False, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    )
    lat: list[float] = []
    health_fail = 0
    try:
        t_open = time.monotonic()
        for _ in range(300):
            if time.monotonic() - t_open > 20:
                break
            try:
                s = await asyncio.to_thread(socket.create_connection, (host, port), 2)
                s.setblocking(False)
                s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            except OSError:
                refused += 1
        start = time.monotonic()
        counts: dict[int, int] = {}
        checks = [15, 30]
        while checks:
            t = time.monotonic() - start
            if t >= checks[0]:
                counts[checks.pop(0)] = sum(still_open(s) for s in socks)
                continue
            t0 = time.monotonic()
            try:
                r = await other.get(f"{c.gateway}/healthz")
                if r.status_code != 200:
                    health_fail += 1
                lat.append(time.monotonic() - t0)
            except httpx.HTTPError:
                health_fail += 1
            await asyncio.sleep(min(2.0, max(0.0, checks[0] - (time.monotonic() - start))) if checks else 0)
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        await other.aclose()
    opened = len(socks)
    lat_ms = sorted(x * 1000 for x in lat)
    lat_txt = (
        f"healthz median={statistics.median(lat_ms):.0f}ms max={lat_ms[-1]:.0f}ms n={len(lat_ms)}"
        if lat_ms
        else "healthz n=0"
    )
    ok = counts.get(30, 1) == 0 and health_fail == 0
    return (
        f"{verdict(ok)} of {opened} unfinished requests, {counts.get(15)} still open after 15 s and "
        f"{counts.get(30)} after 30 s (connected={opened} refused_or_failed={refused} {lat_txt} "
        f"healthz_failures={health_fail} (asked from 127.0.0.2); expected: the gateway closes them)"
    )


# --------------------------------------------------------------------------- 10. redaction


async def probe_redaction(c: Ctx) -> str:
    log = c.log_dir / "gateway.log"
    if not log.is_file():
        return f"ERROR no gateway log at {log} (pass --log-dir or --checkout)"
    user = c.uid("redact")
    token = await c.tok(user)
    cid = c.cid("redact")
    r = await c.prompt(token, cid, "hello" + QUICK, prompt_id="p-1", retry_429_s=10)
    before = log.read_bytes().count(token.encode())
    host, port = host_port(c.gateway)
    url = f"ws://{host}:{port}/v1/conversations/{cid}/ws?access%5Ftoken={token}"
    outcome = ""
    try:
        async with asyncio.timeout(10):
            async with websockets.connect(url, open_timeout=5, proxy=None) as ws:
                await ws.send(json.dumps({"type": "subscribe"}))
                first = json.loads(await ws.recv())
                outcome = f"accepted, first frame {first.get('type')}"
    except websockets.exceptions.InvalidStatus as exc:
        outcome = f"refused {exc.response.status_code}"
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        outcome = f"failed {err(exc)}"
    count = before
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        count = log.read_bytes().count(token.encode())
        if count > before:
            break
        await asyncio.sleep(0.2)
    ok = count == 0
    return (
        f"{verdict(ok)} the token occurs {count} time(s) in {log} after a WebSocket with ?access%5Ftoken= "
        f"(websocket {outcome}; prompt {r.status_code}; expected 0)"
    )


# --------------------------------------------------------------------------- 11. chunked body


async def probe_chunked_body(c: Ctx) -> str:
    user = c.uid("chunked")
    token = await c.tok(user)
    cid = c.cid("chunked")
    payload = json.dumps({"prompt_id": "p-1", "text": "a" * 70_000}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 8192):
            yield payload[i : i + 8192]

    r = await c.http.post(
        f"{c.gateway}/v1/conversations/{cid}/prompts",
        content=chunks(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    code = ""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = r.json()["error"]["code"]
    return (
        f"{verdict(r.status_code == 413)} a {len(payload)} B chunked prompt body -> {r.status_code} {code} "
        f"(expected 413)"
    )


# --------------------------------------------------------------------------- 12. headers


async def probe_headers(c: Ctx) -> str:
    r = await c.http.get(f"{c.gateway}/")
    csp = r.headers.get("content-security-policy")
    xfo = r.headers.get("x-frame-options")
    nosniff = r.headers.get("x-content-type-options")
    ancestors = bool(csp and "frame-ancestors" in csp)
    ok = bool(csp) and (ancestors or bool(xfo)) and (nosniff or "").lower() == "nosniff"
    return (
        f"{verdict(ok)} GET / -> {r.status_code}: CSP {'present' if csp else 'MISSING'}, "
        f"frame-ancestors {'present' if ancestors else 'missing'}, X-Frame-Options {xfo or 'missing'}, "
        f"X-Content-Type-Options {nosniff or 'missing'} (csp={csp!r})"
    )


# --------------------------------------------------------------------------- 13. /api/chat type confusion


async def probe_chat_type(c: Ctx) -> str:
    user = c.uid("chattype")
    token = await c.tok(user)
    body = {
        "id": c.cid("chattype"),
        "messages": [{"role": "user", "id": "m1", "parts": [{"type": "text", "text": 5}]}],
    }
    # connection: close, as the server may drop the connection after an internal error
    r = await c.http.post(
        f"{c.gateway}/api/chat",
        json=body,
        headers={"authorization": f"Bearer {token}", "connection": "close"},
    )
    code = ""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = r.json()["error"]["code"]
    return f"{verdict(r.status_code == 400)} text part with a number -> {r.status_code} {code} (expected 400)"


# --------------------------------------------------------------------------- 14. /api/chat expiry


async def probe_chat_expiry(c: Ctx) -> str:
    user = c.uid("expiry")
    issued = await c.token(user, ttl_s=5)
    token, expires_at = issued["token"], float(issued["expires_at"])
    body = {
        "id": c.cid("expiry"),
        "messages": [
            {"role": "user", "id": "m1", "parts": [{"type": "text", "text": "long [[tokens=60]] [[rate=2]]"}]}
        ],
    }
    deltas = after = 0
    last_data = 0.0
    ending = "stream still open at the probe's 45 s limit"
    status = 0
    try:
        async with asyncio.timeout(45):
            async with c.http.stream(
                "POST",
                f"{c.gateway}/api/chat",
                json=body,
                headers={"authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(10.0, read=40.0),
            ) as r:
                status = r.status_code
                if r.status_code != 200:
                    ending = f"refused {r.status_code} {(await r.aread())[:100]!r}"
                else:
                    ending = "stream closed"
                    async for line in r.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        now = time.time()
                        if data == "[DONE]":
                            ending = "[DONE]" if ending == "stream closed" else ending + " then [DONE]"
                            continue
                        part = json.loads(data)
                        kind = part.get("type")
                        if kind == "text-delta":
                            deltas += 1
                            last_data = now
                            after += now > expires_at
                        elif kind == "error":
                            ending = f"error part {part.get('errorText', '')[:60]!r}"
                            last_data = now
                        elif kind == "finish":
                            ending = "finish (the whole answer)"
    except TimeoutError:
        pass
    except httpx.HTTPError as exc:
        ending = f"transport error {err(exc)}"
    secs_after = max(0.0, last_data - expires_at) if last_data else 0.0
    ok = status == 200 and deltas < 60 and secs_after <= 16.0
    return (
        f"{verdict(ok)} with a 5 s token the answer kept streaming {secs_after:.1f} s past expiry "
        f"({deltas} text-deltas of 60, {after} after expiry; ended: {ending}; expected to stop within "
        f"a heartbeat of expiry)"
    )


# --------------------------------------------------------------------------- main

PROBES: dict[str, Callable[[Ctx], Awaitable[str]]] = {
    "size": probe_size,
    "session_port": probe_session_port,
    "snapshot_trail": probe_snapshot_trail,
    "marker_poison": probe_marker_poison,
    "ownership_race": probe_ownership_race,
    "cancel_flood": probe_cancel_flood,
    "model_max_tokens": probe_model_max_tokens,
    "host_header": probe_host_header,
    "slowloris": probe_slowloris,
    "redaction": probe_redaction,
    "chunked_body": probe_chunked_body,
    "headers": probe_headers,
    "chat_type": probe_chat_type,
    "chat_expiry": probe_chat_expiry,
}
LIMITS_S = {"size": 180, "slowloris": 80, "chat_expiry": 60, "snapshot_trail": 120, "ownership_race": 90}


def pick(only: str | None) -> list[str]:
    if not only:
        return ORDER
    by_number = {str(v): k for k, v in NUMBERS.items()}
    wanted = []
    for raw in only.split(","):
        item = raw.strip()
        name = by_number.get(item, item)
        if name not in PROBES:
            raise SystemExit(f"unknown probe {item!r}; names: {', '.join(ORDER)} (or their numbers 1-14)")
        wanted.append(name)
    return [n for n in ORDER if n in wanted]


async def run(args: argparse.Namespace) -> int:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        c = Ctx(args.gateway, args.sessions, args.worker, Path(args.log_dir), args.poison_tokens, http)
        print(f"# probe run {c.nonce}: ids and users end in -{c.nonce}")
        try:
            r = await http.get(f"{c.gateway}/healthz", timeout=5)
            print(f"# gateway {c.gateway}/healthz -> {r.status_code}")
        except httpx.HTTPError as exc:
            print(f"# gateway {c.gateway} not answering ({err(exc)}); probes will report errors")
        bad = 0
        for name in pick(args.only):
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(LIMITS_S.get(name, 45)):
                    result = await PROBES[name](c)
            except TimeoutError:
                result = f"ERROR the probe did not finish within {LIMITS_S.get(name, 45)} s"
            except Exception as exc:  # noqa: BLE001 - a probe's failure is its result; the others still run
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                result = f"ERROR {err(exc)} at line {tb.lineno}"
            bad += not result.startswith("OK")
            print(f"PROBE {name}: {result} [#{NUMBERS[name]}, {time.monotonic() - t0:.1f}s]", flush=True)
        return bad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", default="http://127.0.0.1:8000")
    p.add_argument("--sessions", default="http://127.0.0.1:18082")
    p.add_argument("--worker", default="http://127.0.0.1:18081")
    p.add_argument(
        "--checkout", help="the checkout `make run` runs from (prints its commit; default log dir)"
    )
    p.add_argument(
        "--log-dir", help="where gateway.log is (default: <checkout>/.local/logs, else ./.local/logs)"
    )
    p.add_argument("--only", help="comma-separated probe names or numbers (1-14); default: all")
    p.add_argument(
        "--poison-tokens",
        type=int,
        default=100_000_000,
        help="N of the [[tokens=N]] probe (default 100000000)",
    )
    args = p.parse_args()
    for url in (args.gateway, args.sessions, args.worker):
        if httpx.URL(url).host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"loopback only: {url}")
    if args.log_dir is None:
        args.log_dir = str(Path(args.checkout or ".") / ".local" / "logs")
    if args.checkout:
        try:
            head = subprocess.run(
                ["git", "-C", args.checkout, "log", "-1", "--format=%H %s"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            head = f"unknown ({err(exc)})"
        print(f"# probing checkout {os.path.abspath(args.checkout)} at {head}")
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} gateway={args.gateway} sessions={args.sessions} "
        f"worker={args.worker} logs={args.log_dir}"
    )
    print(
        "# each line: PROBE <name>: OK (as issue 21 asks) | BAD (finding present) | "
        "ERROR (probe could not run)"
    )
    t0 = time.monotonic()
    bad = asyncio.run(run(args))
    print(f"# done in {time.monotonic() - t0:.0f}s: {bad} probe(s) not OK")
    sys.exit(0)


if __name__ == "__main__":
    main()
