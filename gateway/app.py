"""The HTTP surface: FastAPI routes over ``service.Gateway``.

Every error leaves as ``{"error": {"code", "message", "action"}}`` with the status of the table in
``errors.py``; WebSocket streams get an ``error`` frame and the table's close code.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, Query, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.aisdk import HEADERS as AISDK_HEADERS
from gateway.aisdk import AnswerStream, last_user_prompt
from gateway.aisdk import part as aisdk_part
from gateway.auth import Identity, TokenService, bearer
from gateway.connection import Connection, Control, Item
from gateway.entry import Entry
from gateway.errors import (
    GatewayError,
    HostNotAllowed,
    Internal,
    InvalidCursor,
    InvalidFrame,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    OriginNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from gateway.limits import acting_user
from gateway.models import (
    CONVERSATION_ERRORS,
    ERROR_RESPONSES,
    ID_PATTERN,
    Accepted,
    CancelBody,
    ChatBody,
    DevToken,
    DevTokenBody,
    PromptBody,
    error_responses,
)
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from gateway.wire import control_json, heartbeat_json, parse_client_frame, sse_event, sse_retry
from schemas.cursor import Position, parse
from schemas.errors import CursorError
from schemas.records import TERMINAL_TYPES, ResponseStarted

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_response(exc: GatewayError) -> JSONResponse:
    headers = {}
    if "retry_after_s" in exc.details:
        headers["Retry-After"] = str(max(1, round(float(exc.details["retry_after_s"]))))
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


class BodyLimit:
    """Pure ASGI middleware: a request with a body (``Content-Length`` or ``Transfer-Encoding``)
    has it read here first, before any route (and before authentication): over ``limit`` bytes
    it gets 413, not complete within ``timeout_s`` of its headers 408 (a slow body). The route
    then reads the body from memory. Requests without one (streams among them) pass untouched."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    await error_response(self._too_large())(scope, receive, send)
                    return
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away
                    body = message.get("body", b"")
                    seen += len(body)
                    if seen > self.limit:
                        await error_response(self._too_large())(scope, receive, send)
                        return
                    chunks.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            timeout = RequestTimeout(f"the request body did not arrive within {self.timeout_s:g} s")
            await error_response(timeout)(scope, receive, send)
            return
        replayed = False

        async def buffered() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, buffered, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body over {self.limit} bytes")


class HostCheck:
    """Pure ASGI middleware: a request or WebSocket whose ``Host`` is not ``allowed`` gets 400
    ``host_not_allowed`` (development mode: a page on another origin that resolves to this
    machine, DNS rebinding, cannot reach the token issuer or the API)."""

    def __init__(self, app: ASGIApp, allowed: Callable[[str], bool]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [v.decode("latin-1").lower() for k, v in scope.get("headers", ()) if k == b"host"]
            if len(hosts) != 1 or not self.allowed(hosts[0]):  # none, two, or not ours
                denied = error_response(HostNotAllowed("this Host is not served here"))
                if scope["type"] == "http":
                    await denied(scope, receive, send)
                else:
                    await WebSocket(scope, receive, send).send_denial_response(denied)
                return
        await self.app(scope, receive, send)


CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
"""The browser app's Content-Security-Policy: its own scripts and styles only, no framing."""
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
DOCS = ("/docs", "/redoc")
"""FastAPI's documentation pages load their scripts from a CDN: they get ``frame-ancestors``
alone."""


class SecurityHeaders:
    """Pure ASGI middleware: every HTTP response carries the CSP, ``nosniff``, a referrer policy
    and ``X-Frame-Options: DENY``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        csp = b"frame-ancestors 'none'" if path.startswith(DOCS) else CSP.encode()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers += [(b"content-security-policy", csp), *SECURITY_HEADERS]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


Auth = Annotated[str | None, Header(description="Bearer <token>")]
Token = Annotated[str | None, Query(description="the bearer token, for clients that cannot set headers")]
Cid = Annotated[str, PathParam(pattern=ID_PATTERN, max_length=128, description="the conversation id")]
_CID = re.compile(ID_PATTERN)


def check_cid(cid: str) -> str:
    if not _CID.fullmatch(cid):
        raise InvalidRequest(f"conversation id must match {ID_PATTERN}")
    return cid


def parse_position(*candidates: str | None) -> Position | None:
    """The first cursor given (Last-Event-ID, then ?cursor=, then ?lastEventId=); None: hydrate."""
    for text in candidates:
        if text is None or text == "":
            continue
        try:
            return parse(text)
        except CursorError as exc:
            raise InvalidCursor(str(exc), reason=exc.reason) from exc
    return None


def create_app(settings: GatewaySettings, gateway: Gateway | None = None) -> FastAPI:
    gw = gateway or Gateway(settings)
    tokens = TokenService(settings.secret, settings.token_ttl_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        log.info("gateway serving partitions %s of log epoch %s", sorted(gw.served), gw.epoch)
        if settings.gc_freeze:
            gc.collect()
            gc.freeze()
            gw.metrics.gc_frozen.set(gc.get_freeze_count())
        try:
            yield
        finally:
            await gw.stop()

    app = FastAPI(
        title="tokenlog gateway",
        version="1",
        description="Prompts in; WebSocket and SSE streams of answers out, resumable by cursor.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.gateway = gw
    app.state.tokens = tokens
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    if settings.checks_host:
        app.add_middleware(HostCheck, allowed=settings.host_allowed)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> Response:
        gw.metrics.errors.labels(exc.code).inc()
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in err.get("loc", ()))
        gw.metrics.errors.labels("invalid_request").inc()
        return error_response(InvalidRequest(f"{where}: {err.get('msg', 'invalid')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:  # with the Allow header Starlette names
            response = error_response(MethodNotAllowed(str(exc.detail)))
            response.headers.update(exc.headers or {})
            return response
        if exc.status_code == 404:
            return error_response(NotFound("no such route"))
        error = InvalidRequest if exc.status_code < 500 else Internal  # typed, whatever else comes
        return error_response(error(str(exc.detail)))

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        gw.metrics.errors.labels("internal").inc()
        return error_response(Internal(f"internal error ({type(exc).__name__})"))

    def identify(authorization: str | None, access_token: str | None) -> Identity:
        identity = tokens.verify(bearer(authorization, access_token))
        acting_user.set(identity.user_id)  # the log reads this request starts count for the user
        return identity

    # ------------------------------------------------------------------ commands

    @app.post(
        "/v1/conversations/{cid}/prompts",
        status_code=202,
        response_model=Accepted,
        responses={**CONVERSATION_ERRORS, **error_responses(409)},
    )
    async def submit_prompt(
        cid: Cid, body: PromptBody, authorization: Auth = None, access_token: Token = None
    ) -> Accepted:
        """Submit a prompt; 202 once it is durable in ``conversation.prompts``. Idempotent on
        ``prompt_id``."""
        identity = identify(authorization, access_token)
        if len(body.text) > settings.max_prompt_chars:
            raise PayloadTooLarge(f"prompt text over {settings.max_prompt_chars} characters")
        return await gw.submit_prompt(check_cid(cid), identity, body)

    @app.post(
        "/v1/conversations/{cid}/cancel",
        status_code=202,
        response_model=Accepted,
        responses=CONVERSATION_ERRORS,
    )
    async def cancel(
        cid: Cid, body: CancelBody | None = None, authorization: Auth = None, access_token: Token = None
    ) -> Accepted:
        """Cancel the running answer (or the one named); 202 once the request is durable."""
        identity = identify(authorization, access_token)
        return await gw.cancel(check_cid(cid), identity, body or CancelBody())

    # ------------------------------------------------------------------ snapshot

    @app.get("/v1/conversations/{cid}", responses=CONVERSATION_ERRORS)
    async def get_conversation(
        cid: Cid, authorization: Auth = None, access_token: Token = None
    ) -> dict[str, Any]:
        """The conversation's snapshot (finished turns, the live answer so far, pending prompts)
        with the ``cursor`` it reflects."""
        identity = identify(authorization, access_token)
        return (await gw.read(check_cid(cid), identity)).body

    # ------------------------------------------------------------------ SSE

    @app.get(
        "/v1/conversations/{cid}/events",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "an SSE stream"},
            **CONVERSATION_ERRORS,
        },
    )
    async def events(  # noqa: PLR0917 - FastAPI passes route parameters by name
        cid: Cid,
        request: Request,
        cursor: Annotated[str | None, Query(max_length=128)] = None,
        lastEventId: Annotated[str | None, Query(max_length=128)] = None,
        authorization: Auth = None,
        access_token: Token = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> Response:
        """The conversation as Server-Sent Events: ``id:`` on every event is its cursor; resumes
        from ``Last-Event-ID``, ``?cursor=`` or ``?lastEventId=``; with none, a snapshot first.
        ``event: heartbeat`` (``{"type":"heartbeat","heartbeat_s":...}``, no ``id:``) comes first
        and after every ``heartbeat_s`` of idleness: a client that hears nothing for longer than
        its liveness time (default 2 x heartbeat_s + 2 s) reconnects with its last cursor."""
        identity = identify(authorization, access_token)
        check_cid(cid)
        position = parse_position(last_event_id, cursor, lastEventId)
        await gw.authorize(cid, identity)
        conn = gw.connect(cid, identity, "sse")
        try:
            await gw.open(conn, position)
        except BaseException:
            gw.disconnect(conn)
            raise
        return StreamingResponse(
            sse_stream(conn, identity),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def sse_stream(conn: Connection, identity: Identity) -> AsyncIterator[bytes]:
        delivered = gw.metrics.delivered.labels("sse")
        # A named event, not a comment: a browser's EventSource never shows comments to its page,
        # and its liveness timer needs to hear something. No ``id:``: it moves no cursor.
        heartbeat = sse_event(heartbeat_json(settings.heartbeat_s), event="heartbeat")
        try:
            yield sse_retry(settings.retry_ms) + heartbeat  # the interval, before anything else
            while True:
                if time.time() >= identity.expires_at:
                    conn.close(Unauthorized("token expired", reason="expired"))
                items = await conn.take(settings.heartbeat_s)
                if items is None:
                    break
                if not items:
                    yield heartbeat
                    continue
                chunk = []
                for item in items:
                    if isinstance(item, Entry):
                        gw.check_entry_owner(conn, item)
                        chunk.append(item.sse)
                    else:
                        chunk.append(sse_event(item.json, event=item.kind, id=item.cursor))
                yield b"".join(chunk)
                gw.metrics.written(items)
                delivered.inc(len(chunk))
                del items, item, chunk  # an idle stream holds no frame it already sent
            if conn.error is not None:
                yield sse_event(orjson.dumps(conn.error.body()), event="error")
        except GatewayError as exc:
            yield sse_event(orjson.dumps(exc.body()), event="error")
        finally:
            gw.disconnect(conn)

    # ------------------------------------------------------------------ WebSocket

    @app.websocket("/v1/conversations/{cid}/ws")
    async def websocket(ws: WebSocket, cid: str) -> None:
        origin = ws.headers.get("origin")
        try:
            if origin is not None and origin not in settings.origins:
                raise OriginNotAllowed(f"Origin {origin!r} is not allowed")
            identity = identify(ws.headers.get("authorization"), ws.query_params.get("access_token"))
            check_cid(cid)
            await gw.authorize(cid, identity)
            conn = gw.connect(cid, identity, "ws")
        except GatewayError as exc:
            gw.metrics.errors.labels(exc.code).inc()
            await ws.send_denial_response(error_response(exc))
            return
        await ws.accept()
        try:
            await ws_session(ws, conn, identity)
        finally:
            gw.disconnect(conn)

    async def ws_send(ws: WebSocket, data: bytes) -> None:
        await ws.send({"type": "websocket.send", "text": data.decode()})

    async def ws_session(ws: WebSocket, conn: Connection, identity: Identity) -> None:
        writer: asyncio.Task[tuple[int, str] | None] | None = None
        close_code, reason = 1000, ""
        # The subscribe deadline runs from the upgrade: frames before it (pings) do not extend it.
        subscribe_by = asyncio.get_running_loop().time() + settings.ws_subscribe_timeout_s
        invalid = 0
        try:
            while True:
                try:
                    async with asyncio.timeout_at(None if writer else subscribe_by):  # no extra task
                        message = await ws.receive()
                except TimeoutError:
                    raise InvalidFrame(
                        f"no subscribe frame within {settings.ws_subscribe_timeout_s:g} s"
                    ) from None
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                kind = None
                flooded = False
                try:
                    try:
                        frame = parse_client_frame(data, max_bytes=settings.max_ws_frame_bytes)
                        kind = frame["type"]
                    finally:
                        if kind != "subscribe":  # every frame but a stream's one subscribe counts
                            flooded = True
                            gw.frames.take(identity.user_id)
                            flooded = False
                    reply = await ws_handle(conn, identity, frame, writer is not None)
                except GatewayError as exc:
                    await ws_send(ws, control_json("error", ref=_ref(data), **exc.body()["error"]))
                    if exc.code in BAD_FRAME:
                        invalid += 1
                    # A failed subscribe ends the socket (there is no stream); so do auth failures,
                    # a flood of frames and too many bad ones. A bad prompt, cancel or ping frame
                    # is answered and the socket stays open.
                    if kind == "subscribe" or flooded or exc.code in ENDS_SOCKET:
                        close_code, reason = exc.close_code, exc.code
                        return
                    if invalid >= settings.ws_max_invalid_frames:
                        too_many = InvalidFrame(f"{invalid} invalid frames; closing")
                        await ws_send(ws, control_json("error", **too_many.body()["error"]))
                        close_code, reason = too_many.close_code, too_many.code
                        return
                    continue
                if reply == "subscribe":
                    writer = asyncio.create_task(ws_writer(ws, conn, identity))
                elif reply is not None:
                    await ws_send(ws, reply)
        except WebSocketDisconnect:
            return
        except GatewayError as exc:
            close_code, reason = exc.close_code, exc.code
        finally:
            if writer is not None:
                conn.close()
                if not writer.done():
                    writer.cancel()
                with contextlib.suppress(BaseException):
                    result = await writer
                    if result is not None:
                        close_code, reason = result
            if conn.error is not None and close_code == 1000:
                close_code, reason = conn.error.close_code, conn.error.code
            if ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close(close_code, reason)

    BAD_FRAME = frozenset({"invalid_frame", "invalid_request", "invalid_cursor"})
    ENDS_SOCKET = frozenset({"unauthorized", "forbidden", "payload_too_large"})

    def _ref(data: str | bytes) -> str | None:
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        ref = frame.get("ref") if isinstance(frame, dict) else None
        return ref if isinstance(ref, str) and len(ref) <= 64 else None

    async def ws_handle(conn: Connection, identity: Identity, frame: dict[str, Any], subscribed: bool) -> Any:
        kind, ref = frame["type"], frame["ref"]
        if time.time() >= identity.expires_at:
            raise Unauthorized("token expired", reason="expired")
        if kind == "ping":
            return control_json("pong", id=frame["id"], ref=ref)
        if kind == "subscribe":
            if subscribed:
                raise InvalidFrame("already subscribed")
            position = parse_position(frame["cursor"])
            await gw.open(
                conn,
                position,
                lambda path: Control(
                    "subscribed",
                    control_json("subscribed", ref=ref, path=path, heartbeat_s=settings.heartbeat_s),
                ),
            )
            return "subscribe"
        if kind == "prompt":
            body: PromptBody = frame["body"]
            if len(body.text) > settings.max_prompt_chars:
                raise PayloadTooLarge(f"prompt text over {settings.max_prompt_chars} characters")
            accepted = await gw.submit_prompt(conn.conversation_id, identity, body)
        else:
            accepted = await gw.cancel(conn.conversation_id, identity, frame["body"])
        return control_json("ack", ref=ref, command=kind, **accepted.model_dump())

    async def ws_write(ws: WebSocket, conn: Connection, items: list[Item]) -> tuple[int, str] | None:
        """One batch (its own frame, so an idle socket's writer holds no frame it already sent)."""
        for item in items:
            if isinstance(item, Entry):
                try:
                    gw.check_entry_owner(conn, item)
                except GatewayError as exc:
                    await ws_send(ws, control_json("error", **exc.body()["error"]))
                    return exc.close_code, exc.code
            await ws_send(ws, item.json)
            gw.metrics.written((item,))
        return None

    async def ws_writer(ws: WebSocket, conn: Connection, identity: Identity) -> tuple[int, str] | None:
        delivered = gw.metrics.delivered.labels("ws")
        heartbeat = heartbeat_json(settings.heartbeat_s)
        while True:
            items = await conn.take(settings.heartbeat_s)
            if items is None:
                break
            if time.time() >= identity.expires_at:
                conn.close(Unauthorized("token expired", reason="expired"))
                continue
            if not items:  # idle: the client's liveness timer hears the link is alive
                await ws_send(ws, heartbeat)
                continue
            refused = await ws_write(ws, conn, items)
            if refused is not None:
                return refused
            delivered.inc(len(items))
            del items
        error = conn.error
        if error is None:
            return None
        with contextlib.suppress(Exception):
            await ws_send(ws, control_json("error", **error.body()["error"]))
            await ws.close(error.close_code, error.code)
        return error.close_code, error.code

    # ------------------------------------------------------------------ Vercel AI SDK

    async def ai_stream(conn: Connection, identity: Identity, response_id: str) -> AsyncIterator[bytes]:
        answer = AnswerStream(response_id)
        try:
            while not answer.done():
                if time.time() >= identity.expires_at:  # as SSE: the stream ends at the token's expiry
                    conn.close(Unauthorized("token expired", reason="expired"))
                items = await conn.take(
                    min(settings.heartbeat_s, max(0.05, identity.expires_at - time.time()))
                )
                if items is None:
                    if conn.error is not None:  # the client resumes with GET /api/chat/{id}/stream
                        yield aisdk_part({"type": "error", "errorText": conn.error.message})
                    return
                chunk: list[bytes] = []
                for item in items:
                    if isinstance(item, Entry):
                        gw.check_entry_owner(conn, item)
                        chunk.extend(answer.from_frame(orjson.loads(item.json)))
                    elif item.kind in ("snapshot", "resync"):
                        conversation = orjson.loads(item.json)["conversation"]
                        live = conversation.get("live")
                        turns = [t for t in conversation.get("turns", []) if t["response_id"] == response_id]
                        if live and live["response_id"] == response_id:
                            chunk.extend(answer.from_turn(live))
                        elif turns:
                            chunk.extend(answer.from_turn(turns[-1]))
                    if answer.done():
                        break
                if chunk:
                    yield b"".join(chunk)
        finally:
            gw.disconnect(conn)

    async def ai_open(cid: str, identity: Identity) -> Connection:
        conn = gw.connect(cid, identity, "aisdk")
        try:
            await gw.open(conn, None)  # subscribed (and a snapshot queued) before anything is written
        except BaseException:
            gw.disconnect(conn)
            raise
        return conn

    @app.post(
        "/api/chat",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "a UI message stream (v1)"},
            **CONVERSATION_ERRORS,
            **error_responses(409),
        },
    )
    async def ai_chat(body: ChatBody, authorization: Auth = None, access_token: Token = None) -> Response:
        """Vercel AI SDK ``useChat`` (default transport): submit the last user message of chat
        ``id`` and stream its answer as a UI message stream (v1)."""
        identity = identify(authorization, access_token)
        cid = body.id
        found = last_user_prompt([m.model_dump() for m in body.messages])
        if found is None:
            raise InvalidRequest("no user message with text to answer")
        message_id, text = found
        if len(text) > settings.max_prompt_chars:
            raise PayloadTooLarge(f"prompt text over {settings.max_prompt_chars} characters")
        prompt_id = (
            message_id
            if _CID.fullmatch(message_id)
            else f"m-{hashlib.sha256(message_id.encode()).hexdigest()[:32]}"
        )
        await gw.authorize(cid, identity)
        conn = await ai_open(cid, identity)
        try:
            accepted = await gw.submit_prompt(cid, identity, PromptBody(prompt_id=prompt_id, text=text))
        except BaseException:
            gw.disconnect(conn)
            raise
        assert accepted.response_id is not None
        return StreamingResponse(
            ai_stream(conn, identity, accepted.response_id),
            media_type="text/event-stream",
            headers=AISDK_HEADERS,
        )

    @app.get(
        "/api/chat/{cid}/stream",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "a UI message stream (v1)"},
            204: {"description": "no answer is being written"},
            **CONVERSATION_ERRORS,
        },
    )
    async def ai_resume(cid: Cid, authorization: Auth = None, access_token: Token = None) -> Response:
        """Vercel AI SDK ``useChat({resume: true})``: the answer being written, from its start, or
        204 when no answer is being written."""
        identity = identify(authorization, access_token)
        check_cid(cid)
        await gw.authorize(cid, identity)
        conn = await ai_open(cid, identity)
        # The answer being written as of the splice: the snapshot's live answer, or one started by
        # the events caught up after it (the snapshot may trail the log), unless one of them ended it.
        writing: str | None = None
        for item in conn.queued_items():
            if isinstance(item, Control) and item.kind in ("snapshot", "resync"):
                live = orjson.loads(item.json)["conversation"].get("live")
                writing = live["response_id"] if live else None
            elif isinstance(item, Entry):
                if isinstance(item.event, ResponseStarted):
                    writing = item.event.response_id
                elif isinstance(item.event, TERMINAL_TYPES) and item.event.response_id == writing:
                    writing = None
        if writing is None:
            gw.disconnect(conn)
            return Response(status_code=204)
        return StreamingResponse(
            ai_stream(conn, identity, writing), media_type="text/event-stream", headers=AISDK_HEADERS
        )

    # ------------------------------------------------------------------ development tokens

    if settings.dev_mode:

        @app.post("/v1/dev/token", response_model=DevToken)
        async def dev_token(body: DevTokenBody) -> DevToken:
            """Development mode only: a token for any user id."""
            token = tokens.issue(body.user_id, ttl_s=body.ttl_s)
            identity = tokens.verify(token)
            return DevToken(token=token, user_id=body.user_id, expires_at=identity.expires_at)

    # ------------------------------------------------------------------ the browser app

    static = Path(__file__).parent / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    async def browser_app() -> FileResponse:
        """The browser client (plain ES modules, no build step)."""
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ operations

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "gateway"}

    @app.get(
        "/readyz",
        responses={
            503: {
                "description": "not ready (starting, broker unreachable, reader lagging, draining)",
                "content": {"application/json": {"schema": {"type": "object", "required": ["ready"]}}},
            }
        },
    )
    async def readyz() -> Response:
        ok, detail = gw.ready()
        return JSONResponse({"ready": ok, "service": "gateway", **detail}, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)  # the Prometheus text format
    async def metrics() -> Response:
        gw.gauges()
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        """FastAPI leaves WebSocket routes out of the document; ours is described by hand."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for operation in (op for ops in schema["paths"].values() for op in ops.values()):
                operation["responses"].pop("422", None)  # validation errors leave as 400 (above)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            schema["paths"]["/v1/conversations/{cid}/ws"] = {
                "get": {
                    "summary": "Websocket",
                    "description": (
                        "WebSocket stream of the conversation (upgrade). Client frames: subscribe "
                        "{cursor?}, prompt, cancel, ping; server frames: subscribed {path, heartbeat_s}, "
                        "snapshot, resync, the log's events (each with its cursor), ack, pong, error, and "
                        "heartbeat {heartbeat_s} after every heartbeat_s seconds of idleness. A client "
                        "that hears no frame of any kind for longer than its liveness time (default "
                        "2 x heartbeat_s + 2 s) treats the link as dead: it closes the socket and "
                        "resumes with its last cursor. Close codes and what the client does next: see "
                        "the README's error table."
                    ),
                    "parameters": [
                        {
                            "name": "cid",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": ID_PATTERN, "maxLength": 128},
                        },
                        {
                            "name": "access_token",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "101": {"description": "switching protocols"},
                        **{
                            str(status): {"description": r["description"]}
                            for status, r in {**ERROR_RESPONSES, **CONVERSATION_ERRORS}.items()
                        },
                    },
                }
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
