"""The Faust floor: what Faust itself costs the session app a token.

The session app's own Faust app (``pipeline.sessions.app.faust_app``: its settings, transport and
fetch settings, read from the same environment) with one agent on ``conversation.tokens`` that
takes each batch as the session app does and applies nothing: no decoding, no state, no table
writes. Its CPU per token at a load, beside the session app's at the same load in the same run
(``bench.suite``), is the part of the session app's cost that is Faust's own: the consumer thread,
and a message, an event and a stream step per record.

    python -m bench.faust_floor
"""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response

from pipeline.sessions.app import faust_app, prepare, source_topic
from pipeline.sessions.settings import SessionsSettings
from schemas.registry import TOKENS_TOPIC


def create_app(settings: SessionsSettings) -> faust.App:
    app = faust_app(settings)
    tokens = source_topic(app, TOKENS_TOPIC, settings)
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
    app = create_app(prepare(SessionsSettings.from_env()))
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
