"""The Faust floor: what Faust itself costs the session app a token.

An app built as the session app is (its transport, fetch settings, batching and settings, read from
the same environment), with one agent on ``conversation.tokens`` that takes each batch and applies
nothing: no decoding, no state, no table writes. Its CPU per token at a load, beside the session
app's at the same load in the same run (``bench.suite``), is the part of the session app's cost
that is Faust's own: the consumer thread, and a message, an event and a stream step per record.

    python -m bench.faust_floor
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import faust
from faust.web import Request, Response

from infra.priority import lower_priority
from infra.topics import shared_partition_count
from pipeline.sessions import kafka
from pipeline.sessions.settings import SessionsSettings
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC


def create_app(settings: SessionsSettings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 5),
    )
    app.transport = kafka.transport(
        app, fetch_min_bytes=settings.fetch_min_bytes, fetch_max_wait_ms=settings.fetch_max_wait_ms
    )
    tokens = app.topic(
        TOKENS_TOPIC,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=False,
    )
    taken: list[int] = [0]

    @app.agent(tokens)
    async def take(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_events, within=settings.batch_ms / 1000):
            taken[0] += len(events)

    @app.page("/readyz")
    async def readyz(web: Any, request: Request) -> Response:
        ready = bool(app.consumer.assignment()) and not app.rebalancing
        response: Response = web.json({"ready": ready, "taken": taken[0]}, status=200 if ready else 503)
        return response

    return app


def main() -> None:
    settings = SessionsSettings.from_env()
    lower_priority(settings.nice)  # as the session app does, before any thread starts
    partitions = asyncio.run(
        shared_partition_count(settings.bootstrap_servers, (PROMPTS_TOPIC, TOKENS_TOPIC))
    )
    app = create_app(replace(settings, partitions=partitions))
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
