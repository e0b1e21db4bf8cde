"""The Faust app that materialises every conversation from the log.

Agents only load, apply (``state.evolve_*``) and save; the tables are changelog-backed
(``<app_id>-sessions-changelog``, ``<app_id>-live-changelog``, compacted) and co-partitioned with
the topics, so the worker that reads a conversation's partition owns its state. Processing is
at-least-once; the reducers apply each offset once, so re-delivery never doubles text.

Web (Faust's own server):

- ``GET /sessions/{conversation_id}``: the snapshot (``snapshot.py``), routed to the worker that
  owns the key's partition when several workers share the tables; 404 for an unknown one, with
  the ``cursor`` up to which the partition has been applied (the conversation has no event at or
  before it), or ``null`` when this worker has applied nothing there since it started; both
  answers carry ``prompts_applied``, the last prompts offset of the partition applied (-1: none
  since it started), as of which ``owner`` is the owner.
- ``GET /healthz``, ``GET /readyz`` (recovery done, not rebalancing).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sys
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any, NoReturn

import faust
from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from infra.broker import cluster_metadata
from infra.errors import InfraError
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from infra.priority import lower_priority
from infra.topics import TopicSpec, ensure, shared_partition_count
from pipeline.sessions import kafka
from pipeline.sessions.analytics import add, answer_metric, public
from pipeline.sessions.codec import StateValue
from pipeline.sessions.metrics import SessionsMetrics
from pipeline.sessions.settings import SessionsSettings
from pipeline.sessions.snapshot import snapshot
from pipeline.sessions.state import LiveAnswer, Session, evolve_live, evolve_live_deltas, evolve_session
from pipeline.sessions.store import Loaded, Tables
from schemas.codec import PROMPTS, TOKENS, TopicCodec
from schemas.cursor import Cursor
from schemas.errors import DecodeError
from schemas.records import PromptSubmitted, TokenDelta
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC


async def cluster_epoch(bootstrap: str, security: KafkaSecurity = PLAINTEXT) -> str:
    """The Kafka cluster id: it changes when the log is reset (storage formatted anew)."""
    cluster = await cluster_metadata(bootstrap, timeout_s=30, security=security)
    return str(cluster["cluster_id"])


def faust_app(settings: SessionsSettings) -> faust.App:
    """The Faust app with the session app's settings and consumer (``bench.faust_floor`` is built
    on it too, so that it measures what the session app's Faust costs)."""
    app = faust.App(
        settings.app_id,
        **settings.kafka_security.faust_kwargs(settings.bootstrap_servers),
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust's default binds every interface
        web_port=settings.web_port,
        # Faust's own pages list the tables' keys and values and the workers' addresses.
        web_router_enabled=False,
        web_tables_enabled=False,
        producer_max_request_size=settings.producer_max_request_size,
        # Where other workers proxy snapshot requests for keys this worker owns.
        canonical_url=f"http://{settings.web_host}:{settings.web_port}",
        web_in_thread=False,
        table_cleanup_interval=3600.0,
        # No standby replicas: with them, a worker that kept its partitions through a rebalance
        # stopped consuming most of them (reproduced with faust-streaming 0.15.3 against Kafka
        # 4.1; the consumer-stall family of faust issues). A new owner replays the changelog.
        table_standby_replicas=0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 5),
        producer_linger=settings.producer_linger_ms / 1000,
    )
    app.transport = kafka.transport(
        app, fetch_min_bytes=settings.fetch_min_bytes, fetch_max_wait_ms=settings.fetch_max_wait_ms
    )
    return app


def source_topic(app: faust.App, name: str, settings: SessionsSettings) -> Any:
    """``conversation.prompts`` or ``conversation.tokens`` as the app reads it. Values arrive as
    bytes and are decoded in the agents: a record Faust itself could not decode stalled its
    stream, while our DecodeError is skipped and counted, with where it lives."""
    return app.topic(
        name, key_serializer="raw", value_serializer="raw", partitions=settings.partitions, internal=False
    )


def require_credential(app: faust.App, token: str) -> None:
    """Every request to ``app``'s web server must bear ``token`` (``Authorization: Bearer``,
    compared in constant time), or it gets 401 before any route runs, Faust's own included."""
    expected = f"Bearer {token}".encode()

    @aiohttp_web.middleware
    async def credential(request: aiohttp_web.Request, handler: Any) -> Any:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            error = {"code": "unauthorized", "message": "this service needs its service credential"}
            return aiohttp_web.json_response({"error": error}, status=401)
        return await handler(request)

    app.web.web_app.middlewares.append(credential)  # type: ignore[attr-defined]  # the aiohttp driver's


def create_app(settings: SessionsSettings, epoch: str) -> faust.App:
    settings.check()
    app = faust_app(settings)
    require_credential(app, settings.service_token)
    prompts = source_topic(app, PROMPTS_TOPIC, settings)
    tokens = source_topic(app, TOKENS_TOPIC, settings)
    metrics = SessionsMetrics()

    def decode(codec: TopicCodec[Any], event: Any) -> Any:
        try:
            return codec.decode(event.value, partition=event.message.partition, offset=event.message.offset)
        except DecodeError as exc:
            metrics.decode_errors.labels(codec.topic).inc()
            log.warning("skipping an undecodable record: %s", exc)
            return None

    usage_topic = app.topic(
        usage_topic_name(settings),
        key_serializer="json",
        value_serializer="json",
        partitions=settings.partitions,
        internal=False,
    )
    # Windowed keys are (key, window) tuples, which only the json key codec carries; the usage topic
    # uses the same codec so a model's table partition is where the router looks for it.
    # Any: the WindowWrapper protocol lacks relative_to, which the class has.
    usage: Any = app.Table(
        TABLES[2], default=dict, partitions=settings.partitions, options=settings.table_options()
    ).tumbling(timedelta(seconds=settings.window_s), expires=timedelta(hours=1))
    models_here: set[str] = set()

    def state_table(name: str) -> Any:
        # A fresh options dict per table: Faust's RocksDB store pops keys out of the one it gets.
        return app.Table(
            name,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=StateValue,
            options=settings.table_options(),
        )

    sessions = state_table(TABLES[0])
    live = state_table(TABLES[1])
    tables = Tables(
        sessions,
        live,
        state_table(TABLES[3]),
        max_value_bytes=settings.max_value_bytes,
        refused=lambda table: metrics.refused_writes.labels(table).inc(),
    )

    # Per prompts partition, the last offset applied: a snapshot's owner is the owner as of it.
    prompts_applied: dict[int, int] = {}

    def apply_prompt(event: Any) -> None:
        record = decode(PROMPTS, event)
        if record is None or event.key is None:
            return
        key = event.key
        found = Loaded(key.decode(), sessions.get(key) or Session(key.decode()), LiveAnswer())
        updated = evolve_session(found.session, record, event.message.offset, max_turns=settings.max_turns)
        if updated is found.session:
            metrics.ignored.labels(PROMPTS_TOPIC).inc()
            return
        tables.save(key, found, updated, found.live)
        metrics.applied.labels(PROMPTS_TOPIC).inc()
        if isinstance(record, PromptSubmitted) and record.user_id != updated.owner:
            metrics.refused_prompts.inc()  # another user's prompt (schemas.ownership)
            log.info("a prompt of a user who does not own the conversation was ignored")

    @app.agent(prompts)
    async def apply_prompts(stream: Any) -> None:
        async for event in stream.events():
            apply_prompt(event)
            prompts_applied[event.message.partition] = event.message.offset

    # Per tokens partition, the last offset this worker has applied: a conversation it does not
    # know has no event at or below it, so a gateway can hydrate a new one without a log scan.
    applied: dict[int, int] = {}
    tokens_applied = metrics.applied.labels(TOKENS_TOPIC)
    tokens_ignored = metrics.ignored.labels(TOKENS_TOPIC)

    @app.agent(tokens)
    async def apply_tokens(stream: Any) -> None:
        # A batch at a time (up to batch_events, or what arrived within batch_ms): each
        # conversation's state is loaded once, every event of the batch applied in order, and the
        # state written once. A table write encodes the whole state (the live answer's text so far)
        # into the store and the changelog, so one per token cost the app most of its time.
        async for events in stream.take_events(settings.batch_events, within=settings.batch_ms / 1000):
            for metric in apply_batch(stream, events):
                await usage_topic.send(key=metric["model"], value=metric)

    def apply_batch(stream: Any, events: list[Any]) -> list[dict[str, Any]]:
        """Apply ``events`` (in log order per partition); the usage metrics they produced."""
        loaded: dict[bytes, Loaded] = {}
        state: dict[bytes, tuple[Session, LiveAnswer]] = {}
        # A conversation's deltas since its last other event: applied at once (evolve_live_deltas),
        # before its next other event or at the end of the batch.
        runs: dict[bytes, list[tuple[TokenDelta, int]]] = {}
        last_event: dict[bytes, Any] = {}
        upto: dict[int, int] = {}
        out: list[dict[str, Any]] = []
        changed = decoded = 0

        def apply_run(key: bytes) -> int:
            """Apply ``key``'s pending deltas; how many were past its live answer's offset."""
            run = runs.pop(key, None)
            if not run:
                return 0
            session, answer = state[key]
            state[key] = (session, evolve_live_deltas(answer, run))
            top, advanced = answer.tokens_offset, 0
            for _, offset in run:
                if offset > top:
                    top, advanced = offset, advanced + 1
            return advanced

        for event in events:
            partition, offset = event.message.partition, event.message.offset
            upto[partition] = offset
            record = decode(TOKENS, event)
            if record is None or event.key is None:
                continue
            key = event.key
            if key not in state:
                # Faust's RocksDB store reads a key from the partition of the event being
                # processed (and writes it there, with its changelog record): always the key's own.
                stream._set_current_event(event)
                found = loaded[key] = tables.load(key)
                state[key] = (found.session, found.live)
            last_event[key] = event
            decoded += 1
            if isinstance(record, TokenDelta):  # only the live answer's text: see apply_run
                runs.setdefault(key, []).append((record, offset))
                continue
            changed += apply_run(key)
            session, answer = state[key]
            updated = evolve_session(
                session, record, offset, live_before=answer, max_turns=settings.max_turns
            )
            live_after = evolve_live(answer, record, offset)
            metric = answer_metric(record, answer, live_after)
            if metric is not None:
                window = int(time.time() // settings.window_s)
                if updated.active_window != window:
                    metric["first_in_window"] = True
                    updated = replace(updated, active_window=window)
                out.append(metric)
            state[key] = (updated, live_after)
            changed += updated is not session or live_after is not answer
        for key in list(runs):
            changed += apply_run(key)
        for key, (session, answer) in state.items():
            found = loaded[key]
            if session is found.session and answer is found.live:
                continue
            stream._set_current_event(last_event[key])
            tables.save(key, found, session, answer)
        if events:
            stream._set_current_event(events[-1])
        applied.update(upto)
        tokens_applied.inc(changed)
        tokens_ignored.inc(decoded - changed)
        return out

    @app.agent(usage_topic)
    async def count_usage(stream: Any) -> None:
        async for event in stream.events():
            if len(models_here) < MAX_MODEL_LABELS:  # bounded label series on /metrics
                models_here.add(event.key)
            usage[event.key] = add(usage[event.key].current(), event.value)

    @app.page("/analytics/models/{model}")
    class UsageView(View):
        @app.table_route(table=usage, match_info="model")
        async def get(self: View, request: Request, *_: Any, **__: Any) -> Response:
            model = request.match_info["model"]
            now = time.time()
            current = usage.relative_to(now)[model].value()
            previous = usage.relative_to(now - settings.window_s)[model].value()
            body = {
                "model": model,
                "window_s": settings.window_s,
                "current": public(current),
                "previous": public(previous),
            }
            return self.json(body)

    @app.page("/sessions/{conversation_id}")
    class SessionView(View):
        @app.table_route(table=sessions, match_info="conversation_id")
        async def get(self: View, request: Request, *_: Any, **__: Any) -> Response:
            conversation_id = request.match_info["conversation_id"]
            key = conversation_id.encode()
            session, answer = tables.whole(key, max_chars=settings.max_snapshot_chars)
            partition = app.producer.key_partition(TOKENS_TOPIC, key).partition
            upto = applied.get(partition)
            prompts_upto = prompts_applied.get(partition, -1)
            if session is None and answer is None:
                metrics.snapshots.labels("404").inc()
                error = {
                    "code": "unknown_conversation",
                    "message": f"no conversation {conversation_id!r} in the log",
                }
                # "Unknown as of this cursor" (null when this worker has applied nothing there yet).
                cursor = Cursor(epoch, partition, upto).format() if upto is not None else None
                unknown = {"error": error, "partition": partition, "cursor": cursor}
                return self.json({**unknown, "prompts_applied": prompts_upto}, status=404)
            body = snapshot(
                session or Session(conversation_id),
                answer or LiveAnswer(),
                epoch=epoch,
                partition=partition,
                applied_upto=-1 if upto is None else upto,
                prompts_applied=prompts_upto,
            )
            metrics.snapshots.labels("200").inc()
            return self.json(body)

    @app.page("/healthz")
    async def healthz(web: Any, request: Request) -> Response:
        response: Response = web.json({"status": "ok", "service": "sessions"})
        return response

    @app.page("/metrics")
    async def prometheus(web: Any, request: Request) -> Response:
        metrics.conversations.set(len(sessions))
        metrics.live_answers.set(sum(1 for value in live.values() if value.turn is not None))
        for model in models_here:
            current = public(usage.relative_to(time.time())[model].value())
            for name, value in current.items():
                metrics.usage.labels(model, name).set(value)
        # aiohttp refuses a charset inside content_type; the exposition format's version is enough.
        content_type = CONTENT_TYPE_LATEST.split("; charset")[0]
        response: Response = web.bytes(generate_latest(metrics.registry), content_type=content_type)
        return response

    @app.page("/readyz")
    async def readyz(web: Any, request: Request) -> Response:
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]  # on TableManager, not its type
        assigned = bool(app.consumer.assignment())
        ready = assigned and recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing
        response: Response = web.json({"ready": ready, "service": "sessions"}, status=200 if ready else 503)
        return response

    return app


log = logging.getLogger(__name__)

TABLES = ("sessions", "live", "usage", "texts")
MAX_MODEL_LABELS = 64
"""Models whose usage ``/metrics`` exports as label values (a model past them is still counted
and served by ``/analytics/models/{model}``)."""


def usage_topic_name(settings: SessionsSettings) -> str:
    return f"{settings.app_id}-usage-by-model"


def changelog_specs(settings: SessionsSettings) -> list[TopicSpec]:
    """The tables' changelog topics, declared by us (compacted, co-partitioned) rather than left
    to Faust, which did not always create the second one against a broker that refuses to
    auto-create topics."""
    specs = [
        TopicSpec(
            f"{settings.app_id}-{name}-changelog",
            settings.partitions,
            settings.replication_factor,
            {"cleanup.policy": "compact,delete" if name == "usage" else "compact"},
        )
        for name in TABLES
    ]
    # Answer metrics repartitioned by model, for the usage table.
    specs.append(
        TopicSpec(
            usage_topic_name(settings),
            settings.partitions,
            settings.replication_factor,
            {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000)},
        )
    )
    return specs


def prepare(settings: SessionsSettings) -> SessionsSettings:
    """Before Faust starts: the process's CPU priority lowered (its threads inherit the nice
    value), and ``settings`` with the source topics' partition count (the tables are
    co-partitioned with them)."""
    lowered = lower_priority(settings.nice)
    if lowered:  # Faust has not set up logging yet
        print(f"sessions: CPU priority lowered ({', '.join(lowered)})", file=sys.stderr, flush=True)
    try:
        partitions = asyncio.run(
            shared_partition_count(
                settings.bootstrap_servers, (PROMPTS_TOPIC, TOKENS_TOPIC), settings.kafka_security
            )
        )
    except InfraError as exc:
        raise SystemExit(f"error: {exc}") from exc
    return replace(settings, partitions=partitions)


def run(settings: SessionsSettings) -> NoReturn:
    try:
        settings.check()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    settings = prepare(settings)
    asyncio.run(ensure(settings.bootstrap_servers, changelog_specs(settings), settings.kafka_security))
    epoch = settings.epoch or asyncio.run(cluster_epoch(settings.bootstrap_servers, settings.kafka_security))
    app = create_app(settings, epoch)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()
