"""Test harness: where the broker comes from, unique names, and services as real processes.

The broker for a test session, in order of preference:

1. ``KAFKA_BOOTSTRAP_SERVERS`` — an existing cluster; nothing is started or stopped.
2. The project's own local broker (``infra.broker``), when Java and Maven are on the machine:
   started in a temporary home on free ports, stopped at the end of the session.
3. testcontainers' Kafka module, when a Docker engine answers.

If none of them gives a broker, the session fails with the reason (and the broker's log
tail) — it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.broker import LocalBroker, wait_for_metadata
from infra.errors import BrokerError
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from infra.process import ManagedProcess, free_port, wait_until
from infra.settings import BrokerSettings


@dataclass
class KafkaForTests:
    """A reachable Kafka and where it came from."""

    bootstrap: str
    origin: str
    """``env``, ``local`` or ``testcontainers``."""
    broker: LocalBroker | None = None

    def describe(self) -> str:
        """Where the broker came from and, for the local one, the version line of its own log."""
        if self.broker is None:
            return f"{self.origin} at {self.bootstrap}"
        lines = self.broker.server_log.read_text(errors="replace").splitlines()
        version = next((line for line in reversed(lines) if "Kafka version:" in line), "version not logged")
        return f"local JVM broker at {self.bootstrap} (PID {self.broker.pid()}); its log: {version}"


SERVICE_TOKEN = os.environ.setdefault("TOKENLOG_SERVICE_TOKEN", secrets.token_urlsafe(48))
"""The service credential of every session app and gateway the tests start (they inherit it)."""
SERVICE_HEADERS = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
"""What a test sends to the session app's routes."""


def unique(prefix: str) -> str:
    """A name no other test (or earlier run) uses: topics, groups, conversation ids."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def local_broker_settings(home: Path) -> BrokerSettings:
    """A broker of its own for a test: temporary home, free ports, small heap."""
    return BrokerSettings(
        home=home, port=free_port(), controller_port=free_port(), heap="512m", start_timeout_s=120
    )


def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "info"], capture_output=True, check=False, timeout=20)
    return probe.returncode == 0


@contextlib.contextmanager
def kafka_for_tests(tmp: Path) -> Iterator[KafkaForTests]:
    """Yield a reachable broker for the session; stop what was started here."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        wait_for_metadata(external, 60)
        yield KafkaForTests(external, "env")
        return
    if shutil.which("java") and shutil.which("mvn"):
        broker = LocalBroker(local_broker_settings(tmp / "kafka"))
        try:
            broker.start()
            yield KafkaForTests(broker.bootstrap, "local", broker)
        finally:
            broker.stop()
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield KafkaForTests(container.get_bootstrap_server(), "testcontainers")
        return
    raise BrokerError(
        "no Kafka for the tests: KAFKA_BOOTSTRAP_SERVERS is unset, java/mvn are not on PATH "
        "and no Docker engine answers"
    )


async def create_topic(
    bootstrap: str, name: str, partitions: int = 3, security: KafkaSecurity = PLAINTEXT
) -> str:
    """A fresh topic for one test (replication 1, or the cluster's default if larger)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


@dataclass
class ServiceRunner:
    """Starts project services as real subprocesses and stops every one of them by PID."""

    log_dir: Path
    started: list[ManagedProcess] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        ready: object = None,
        timeout_s: float = 60,
    ) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.log_dir / f"{name}.log", env={**os.environ, **(env or {})})
        proc.start()
        self.started.append(proc)
        if callable(ready):
            try:
                wait_until(lambda: bool(ready()) or not proc.running(), timeout_s, what=f"{name} ready")
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; log:\n{proc.log_path.read_text()[-3000:]}") from exc
            if not proc.running():
                raise RuntimeError(f"{name} exited at start-up; log:\n{proc.log_path.read_text()[-3000:]}")
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop(grace_s=10)
        self.started.clear()


async def wait_for(condition: object, timeout_s: float = 30.0, interval_s: float = 0.05) -> None:
    """Async poll of a sync or async predicate; raises TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = condition() if callable(condition) else condition
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)
