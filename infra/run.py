"""``make run``: the broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster), the topics and
every service, in the foreground. Ctrl-C (or SIGTERM) stops the services in reverse order and
then the broker, if this command started it. A broker that was already running (``make
kafka-up``) is left running.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from infra.broker import LocalBroker, client_security, wait_for_metadata
from infra.errors import InfraError
from infra.process import ManagedProcess, wait_until
from infra.services import services
from infra.settings import REPO_ROOT, InfraSettings
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
    running: list[ManagedProcess] = []
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

        logs = REPO_ROOT / ".local" / "logs"
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap, **security.env()}
        for spec in services(settings.bootstrap):
            proc = ManagedProcess(
                spec.name, spec.argv, logs / f"{spec.name}.log", env={**env, **spec.env}, cwd=REPO_ROOT
            )
            proc.start()
            running.append(proc)
            if spec.ready is not None:
                probe = spec.ready
                wait_until(lambda p=proc, r=probe: r() or not p.running(), 60, what=f"{spec.name} ready")  # type: ignore[misc]
                if not proc.running():
                    raise InfraError(f"{spec.name} exited during start-up; see {proc.log_path}")
            for label, url in spec.urls.items():
                _log(f"{label}: {url}")
        _log(f"bootstrap servers: {settings.bootstrap}")
        if security.protocol != "PLAINTEXT":
            _log(f"kafka clients:      {security.describe()}, CA {security.ssl_cafile or 'the system store'}")
        _log("list topics:        make topics")
        _log("broker log:         make kafka-logs")
        _log(f"service logs:       {logs}/")
        _log("ready — press Ctrl-C to stop")

        while not stop.wait(0.5):
            for proc in running:
                if not proc.running():
                    _log(
                        f"{proc.name} exited with code {proc.exit_code()}; stopping everything "
                        f"(log: {proc.log_path})"
                    )
                    stop.set()
        return 0 if all(p.running() for p in running) else 1
    except (InfraError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(running):
            _log(f"stopping {proc.name}")
            proc.stop()
        if broker is not None and started_broker:
            _log("stopping kafka")
            began = time.monotonic()
            broker.stop()
            _log(f"kafka stopped in {time.monotonic() - began:.1f}s")


if __name__ == "__main__":
    raise SystemExit(main())
