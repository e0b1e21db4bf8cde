"""An async Python client of the gateway: submit and cancel prompts, follow a conversation over
SSE or WebSocket, and resume from the last cursor on every reconnect.

```python
async with Client("http://127.0.0.1:8000", token) as client:
    await client.prompt("conv-1", "Why is the sky blue?", prompt_id="p-1")
    follower = client.follow("conv-1", transport="ws")
    async for frame in follower.frames():   # reconnects and resumes by itself
        ...
```

A connection on which nothing arrives (no frame, no heartbeat) for the follower's liveness time
is dead: it is closed (``ended == "dead"``) and ``frames()`` resumes from the cursor. The time is
``liveness_s`` when given, else derived from the heartbeat interval the server announces
(``gateway.wire.liveness_s``; 15 s assumed until it does).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import websockets

from gateway.wire import SSEDecoder
from gateway.wire import liveness_s as liveness_for

RESUME_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 4000})
"""WebSocket closes after which the client reconnects and resumes (errors.py's table)."""
ASSUMED_HEARTBEAT_S = 15.0
"""The server's heartbeat interval until it announces its own (the gateway's default)."""


class ClientError(Exception):
    """The gateway refused a request; ``body`` is its JSON error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Connection:
    """What one connection of a follower saw."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    ended: str = ""
    """``limit`` (the caller stopped reading), ``eof`` (SSE stream ended), ``close:<code>``,
    ``dead`` (nothing arrived within the liveness time)."""
    status: int = 0
    """The HTTP status of the SSE response or the WebSocket handshake (0: none arrived)."""
    error: str = ""
    """For ``broken``: the name of the exception that broke the connection."""
    heartbeats: int = 0
    """Heartbeats heard (they keep the link alive; they are not frames of the conversation)."""


class Liveness:
    """The dead-link timer of one connection: a timeout that every arrival pushes back by
    ``seconds`` (read at each arrival, so an interval the server announces applies at once)."""

    def __init__(self, seconds: Callable[[], float]) -> None:
        self._seconds = seconds
        self._timeout = asyncio.timeout(seconds())

    async def __aenter__(self) -> Liveness:
        await self._timeout.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._timeout.__aexit__(*exc)

    def heard(self) -> None:
        """Something arrived: the link is alive for ``seconds`` more."""
        self._timeout.reschedule(asyncio.get_running_loop().time() + self._seconds())

    @property
    def expired(self) -> bool:
        return self._timeout.expired()


class Follower:
    """Follows one conversation; ``cursor`` is the last event (or snapshot) received."""

    def __init__(
        self,
        client: Client,
        conversation_id: str,
        transport: str,
        cursor: str | None,
        liveness_s: float | None = None,
    ) -> None:
        self.client = client
        self.conversation_id = conversation_id
        self.transport = transport
        self.cursor = cursor
        self.received: list[dict[str, Any]] = []
        self.connections: list[Connection] = []
        self.heartbeat_s: float | None = None
        """The server's heartbeat interval, once it announced one."""
        self._liveness_s = liveness_s

    @property
    def liveness_s(self) -> float:
        """How long a connection may stay silent before it is treated as dead."""
        if self._liveness_s is not None:
            return self._liveness_s
        return liveness_for(self.heartbeat_s or ASSUMED_HEARTBEAT_S)

    def _heard(self, frame: dict[str, Any], conn: Connection) -> bool:
        """Learn the heartbeat interval a frame announces; True for a heartbeat (consumed here,
        not a frame of the conversation)."""
        interval = frame.get("heartbeat_s")
        if frame.get("type") in ("subscribed", "heartbeat") and isinstance(interval, int | float):
            self.heartbeat_s = float(interval)
        if frame.get("type") == "heartbeat":
            conn.heartbeats += 1
            return True
        return False

    def _note(self, frame: dict[str, Any], conn: Connection) -> None:
        conn.frames.append(frame)
        self.received.append(frame)
        if isinstance(frame.get("cursor"), str) and frame.get("type") != "subscribed":
            self.cursor = frame["cursor"]

    async def once(
        self, *, max_frames: int | None = None, until: Any = None, timeout_s: float = 30.0
    ) -> Connection:
        """One connection: read until ``max_frames`` frames, ``until(frame)``, or the server ends it."""
        conn = Connection()
        self.connections.append(conn)
        alive = Liveness(lambda: self.liveness_s)  # from the connection attempt: a dead link may
        try:  # accept the TCP connection and never answer
            async with asyncio.timeout(timeout_s), alive:
                if self.transport == "sse":
                    await self._sse(conn, alive, max_frames, until)
                else:
                    await self._ws(conn, alive, max_frames, until)
        except TimeoutError:
            conn.ended = "dead" if alive.expired else conn.ended or "timeout"
        except (httpx.TransportError, OSError) as exc:
            conn.ended = "broken"  # the connection broke (a gateway died): resume elsewhere
            conn.error = type(exc).__name__
        return conn

    def _done(self, conn: Connection, frame: dict[str, Any], max_frames: int | None, until: Any) -> bool:
        if until is not None and until(frame):
            conn.ended = "until"
            return True
        if max_frames is not None and len(conn.frames) >= max_frames:
            conn.ended = "limit"
            return True
        return False

    async def _sse(self, conn: Connection, alive: Liveness, max_frames: int | None, until: Any) -> None:
        params = {"access_token": self.client.token}
        headers = {"Last-Event-ID": self.cursor} if self.cursor else {}
        url = f"{self.client.base_url}/v1/conversations/{self.conversation_id}/events"
        async with self.client.http.stream(
            "GET", url, params=params, headers=headers, timeout=None
        ) as response:
            conn.status = response.status_code
            if response.status_code != 200:
                raise ClientError(response.status_code, orjson.loads(await response.aread()))
            decoder = SSEDecoder()
            async for chunk in response.aiter_raw():
                for kind, _id, data in decoder.feed(chunk):
                    frame = orjson.loads(data)
                    if kind == "error" and "error" in frame:
                        frame = {"type": "error", **frame["error"]}
                    if self._heard(frame, conn):
                        continue
                    self._note(frame, conn)
                    if self._done(conn, frame, max_frames, until):
                        return
                alive.heard()  # any bytes (a large frame may take more than one read), after the
                # interval they may announce is learnt
            conn.ended = "eof"

    async def _ws(self, conn: Connection, alive: Liveness, max_frames: int | None, until: Any) -> None:
        query = urllib.parse.urlencode({"access_token": self.client.token})
        base = self.client.base_url.replace("http://", "ws://").replace("https://", "wss://")
        url = f"{base}/v1/conversations/{self.conversation_id}/ws?{query}"
        try:
            # No receive flow control: a follower that stops reading early still gets to the
            # server's close frame behind the frames in flight (else close() waits its timeout).
            # The liveness timer bounds the opening handshake too (open_timeout=None).
            async with websockets.connect(
                url, compression=None, max_size=2**24, max_queue=None, open_timeout=None
            ) as ws:
                conn.status = 101
                try:
                    await ws.send(orjson.dumps({"type": "subscribe", "cursor": self.cursor}).decode())
                    async for message in ws:
                        frame = orjson.loads(message)
                        heartbeat = self._heard(frame, conn)
                        alive.heard()  # after the interval the frame may announce is learnt
                        if heartbeat:
                            continue
                        self._note(frame, conn)
                        if self._done(conn, frame, max_frames, until):
                            return
                except asyncio.CancelledError:
                    if alive.expired:  # a dead link: no close handshake to wait for on it
                        ws.transport.abort()
                    raise
        except websockets.InvalidStatus as exc:
            conn.status = exc.response.status_code
            body = exc.response.body or b"{}"
            raise ClientError(exc.response.status_code, orjson.loads(body)) from exc
        except websockets.ConnectionClosed as exc:
            conn.ended = f"close:{exc.rcvd.code if exc.rcvd else 1006}"
            return
        conn.ended = f"close:{1000}"

    async def frames(self, *, reconnect_max_s: float = 5.0) -> AsyncIterator[dict[str, Any]]:
        """Every frame, across reconnects (exponential backoff with jitter), until stopped."""
        attempt = 0
        while True:
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

            def push(frame: dict[str, Any], queue: asyncio.Queue[dict[str, Any]] = queue) -> bool:
                queue.put_nowait(frame)
                return False

            task = asyncio.create_task(self.once(until=push, timeout_s=1e9))
            try:
                while not task.done() or not queue.empty():
                    getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        attempt = 0
                        yield getter.result()
                    else:
                        getter.cancel()
                with contextlib.suppress(ClientError, OSError, httpx.HTTPError):
                    task.result()
            finally:
                task.cancel()
            attempt += 1
            await asyncio.sleep(min(reconnect_max_s, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))


class Client:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.http = httpx.AsyncClient(timeout=30.0)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    @staticmethod
    async def dev_token(base_url: str, user_id: str, ttl_s: int | None = None) -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            body: dict[str, Any] = {"user_id": user_id}
            if ttl_s is not None:
                body["ttl_s"] = ttl_s
            response = await http.post(f"{base_url.rstrip('/')}/v1/dev/token", json=body)
            if response.status_code != 200:
                raise ClientError(response.status_code, response.json())
            return str(response.json()["token"])

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def prompt(self, conversation_id: str, text: str, **fields: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.base_url}/v1/conversations/{conversation_id}/prompts",
            json={"text": text, **fields},
            headers=self._auth(),
        )
        if response.status_code != 202:
            raise ClientError(response.status_code, response.json())
        return dict(response.json())

    async def cancel(self, conversation_id: str, **fields: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.base_url}/v1/conversations/{conversation_id}/cancel", json=fields, headers=self._auth()
        )
        if response.status_code != 202:
            raise ClientError(response.status_code, response.json())
        return dict(response.json())

    async def snapshot(self, conversation_id: str) -> dict[str, Any]:
        response = await self.http.get(
            f"{self.base_url}/v1/conversations/{conversation_id}", headers=self._auth()
        )
        if response.status_code != 200:
            raise ClientError(response.status_code, response.json())
        return dict(response.json())

    def follow(
        self,
        conversation_id: str,
        *,
        transport: str = "sse",
        cursor: str | None = None,
        liveness_s: float | None = None,
    ) -> Follower:
        """A follower of the conversation; ``liveness_s`` overrides the dead-link time derived from
        the server's heartbeat interval."""
        return Follower(self, conversation_id, transport, cursor, liveness_s)


# --------------------------------------------------------------------------- command line

CLI_HELP = """\
python -m gateway.client [--url URL] [--user USER | --token TOKEN] COMMAND ...

  follow CID [--transport sse|ws] [--state FILE] [--exit-after-answer]
      print the conversation's answers as they stream; the last cursor is kept in FILE
      (default .local/client/CID.cursor), so an interrupted run started again goes on at the
      exact event where it stopped (nothing printed twice, nothing skipped)
  prompt CID TEXT [--prompt-id ID]     submit a prompt (idempotent on --prompt-id)
  cancel CID                            stop the running answer

--user asks the gateway's development issuer for a token (make run); --token uses yours.
"""


async def _cli(argv: list[str]) -> int:
    import argparse
    import pathlib
    import sys

    parser = argparse.ArgumentParser(prog="python -m gateway.client", usage=CLI_HELP)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="me")
    parser.add_argument("--token")
    sub = parser.add_subparsers(dest="command", required=True)
    follow = sub.add_parser("follow")
    follow.add_argument("cid")
    follow.add_argument("--transport", choices=("sse", "ws"), default="ws")
    follow.add_argument("--state")
    follow.add_argument("--exit-after-answer", action="store_true")
    prompt = sub.add_parser("prompt")
    prompt.add_argument("cid")
    prompt.add_argument("text")
    prompt.add_argument("--prompt-id")
    cancel = sub.add_parser("cancel")
    cancel.add_argument("cid")
    args = parser.parse_args(argv)

    token = args.token or await Client.dev_token(args.url, args.user)
    async with Client(args.url, token) as client:
        if args.command == "prompt":
            fields = {"prompt_id": args.prompt_id} if args.prompt_id else {}
            print(orjson.dumps(await client.prompt(args.cid, args.text, **fields)).decode())
            return 0
        if args.command == "cancel":
            print(orjson.dumps(await client.cancel(args.cid)).decode())
            return 0
        state = pathlib.Path(args.state or f".local/client/{args.cid}.cursor")
        state.parent.mkdir(parents=True, exist_ok=True)
        cursor = state.read_text().strip() if state.exists() else None  # noqa: ASYNC240 - a few bytes, once, before streaming
        follower = client.follow(args.cid, transport=args.transport, cursor=cursor or None)
        out = sys.stdout
        async for frame in follower.frames():
            kind = frame.get("type")
            # Print, flush and save the cursor with no await in between: a signal (delivered as
            # an exception at an await) never separates what was shown from what is remembered.
            if kind == "snapshot":
                live = (frame["conversation"] or {}).get("live")
                if live:
                    out.write(f"> {live['prompt_text']}\n{live['answer']}")
            elif kind == "resync":
                out.write(f"\n[resync: {frame['reason']}]\n")
            elif kind == "response.started":
                out.write(f"> {frame['prompt_text']}\n")
            elif kind == "token":
                out.write(frame["text"])
            elif kind == "response.resumed" and frame.get("mode") == "RESTART":
                out.write("\n[the answer restarts]\n")
            elif kind in ("response.completed", "response.failed", "response.cancelled"):
                out.write(f"\n[{kind.removeprefix('response.')}]\n")
            out.flush()
            if isinstance(frame.get("cursor"), str) and kind != "subscribed":
                state.write_text(frame["cursor"])  # noqa: ASYNC240 - deliberately synchronous (see above)
            if args.exit_after_answer and kind in (
                "response.completed",
                "response.failed",
                "response.cancelled",
            ):
                return 0
    return 0


def main() -> None:
    import sys

    try:
        raise SystemExit(asyncio.run(_cli(sys.argv[1:])))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ClientError as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
