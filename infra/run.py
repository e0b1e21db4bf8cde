"""``make run``: the broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster), the topics and
every service, in the foreground, supervised (``infra.supervisor``): a service that exits is
started again after a capped, growing pause. Ctrl-C (or SIGTERM) stops the services in reverse
order and then the broker, if this command started it; so does a service that fails to start
several times in a row (exit code 1 then). A broker that was already running (``make kafka-up``)
is left running.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from infra.broker import LocalBroker, client_security, wait_for_metadata
from infra.errors import InfraError
from infra.services import services
from infra.settings import REPO_ROOT, InfraSettings
from infra.supervisor import Supervisor
from infra.topics import ensure, topic_specs


def _log(message: str) -> None:
    print(f"[tokenlog] {message}", flush=True)


def main() -> int:
    settings = InfraSettings.from_env()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    broker: LocalBroker | None = None
    started_broker = False
    supervisor: Supervisor | None = None
    try:
        if settings.uses_external_cluster:
            _log(f"using the cluster at KAFKA_BOOTSTRAP_SERVERS={settings.bootstrap}")
            wait_for_metadata(settings.bootstrap, settings.broker.start_timeout_s, security=settings.security)
        else:
            broker = LocalBroker(settings.broker)
            started_broker = not broker.running()
            took = broker.start()
            how = f"started in {took:.1f}s" if started_broker else "already running (left running on exit)"
            _log(f"kafka {broker.version()} {how} at {broker.bootstrap}, data in {broker.data_dir}")

        import asyncio

        security = client_security(settings)
        todo = asyncio.run(ensure(settings.bootstrap, topic_specs(settings.topics), security))
        names = [s.name for s in topic_specs(settings.topics)]
        _log(
            f"topics ready: {', '.join(names)} ({settings.topics.partitions} partitions; "
            f"{len(todo.create)} created)"
        )

        supervisor = Supervisor(
            services(settings.bootstrap),
            {**os.environ, **security.env()},
            settings.run.log_dir,
            settings.run.restarts,
            settings.run.ready_timeout_s,
            cwd=REPO_ROOT,
            say=_log,
        )
        _log(f"bootstrap servers: {settings.bootstrap}")
        if security.protocol != "PLAINTEXT":
            _log(f"kafka clients:      {security.describe()}, CA {security.ssl_cafile or 'the system store'}")
        _log("list topics:        make topics")
        _log("broker log:         make kafka-logs")
        _log(f"service logs:       {settings.run.log_dir}/")
        while not stop.wait(0.2):
            verdict = supervisor.tick()
            if verdict is not None:
                _log(verdict)
                return 1
        return 0
    except (InfraError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if supervisor is not None:
            supervisor.stop()
        if broker is not None and started_broker:
            _log("stopping kafka")
            began = time.monotonic()
            broker.stop()
            _log(f"kafka stopped in {time.monotonic() - began:.1f}s")


if __name__ == "__main__":
    raise SystemExit(main())
