"""``python -m pipeline worker|sessions``: the services; ``python -m pipeline replay``: audit and
export from the log (``pipeline/replay/cli.py``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pipeline.http import bind, ops_app, serve
from pipeline.metrics import WorkerMetrics
from pipeline.providers.base import ModelProvider
from pipeline.settings import WorkerSettings


def make_provider(settings: WorkerSettings) -> ModelProvider:
    if settings.provider == "openai":
        from pipeline.providers.openai import OpenAIProvider

        return OpenAIProvider(settings.openai)
    from pipeline.providers.demo import DemoProvider

    return DemoProvider(settings.demo)


async def run_worker(settings: WorkerSettings) -> int:
    from pipeline.worker import Worker

    metrics = WorkerMetrics()
    provider = make_provider(settings)
    worker = Worker(settings, provider, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    sock = bind(settings.http_host, settings.http_port)
    host, port = sock.getsockname()[:2]
    stop_http = asyncio.Event()
    http = asyncio.create_task(serve(ops_app(metrics.registry, worker.loaded, "worker"), sock, stop_http))
    logging.getLogger("pipeline").info(
        "worker %s: provider %s, group %s, health and metrics on http://%s:%d/metrics",
        settings.worker_id,
        provider.name,
        settings.group_id,
        host,
        port,
    )
    print(f"worker ready-for-http http://{host}:{port}", flush=True)
    try:
        await worker.run()
        return 0
    except Exception:
        logging.getLogger("pipeline").exception("worker stopped on an error")
        return 1
    finally:
        stop_http.set()
        await http
        await provider.aclose()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["replay"]:
        from pipeline.replay.cli import main as replay

        return replay(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m pipeline")
    parser.add_argument("service", choices=["worker", "sessions", "replay"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    if args.service == "worker":
        return asyncio.run(run_worker(WorkerSettings.from_env()))
    from pipeline.sessions.app import run
    from pipeline.sessions.settings import SessionsSettings

    return run(SessionsSettings.from_env())


if __name__ == "__main__":
    raise SystemExit(main())
