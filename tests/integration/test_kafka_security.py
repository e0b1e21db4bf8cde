"""The whole system against a broker with a SASL_SSL listener only (TLS from a CA made at start, a
SCRAM-SHA-512 user added at format time): topics, a worker, the session app and a gateway as real
processes, every Kafka client through ``KafkaSecurity``. A wrong password stops each service at
start-up, saying so."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.client import Client, ClientError
from infra.broker import LocalBroker, classpath, cluster_metadata
from infra.errors import KafkaAuthenticationError
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from infra.process import wait_until
from infra.settings import TopicSettings
from infra.topics import describe, ensure, topic_specs
from pipeline.replay.source import ReplaySource, Selection
from schemas.registry import PROMPTS_TOPIC, TOKENS_TOPIC
from tests.gateway.stack import Stack
from tests.harness import ServiceRunner, local_broker_settings, unique
from tests.pipeline.helpers import all_finished, get_snapshot, read_transcript, start_sessions, start_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A second local broker of its own, SASL_SSL, with its topics provisioned through it."""
    home = tmp_path_factory.mktemp("secured-kafka")
    settings = replace(
        local_broker_settings(home / "kafka"),
        security="sasl_ssl",
        sasl_username=unique("svc"),
        sasl_password=secrets.token_hex(16),
    )
    broker = LocalBroker(settings)
    broker.start()
    try:
        asyncio.run(ensure(broker.bootstrap, topic_specs(TopicSettings()), broker.client_security()))
        yield broker
    finally:
        broker.stop()


def admin_over_the_controller(broker: LocalBroker, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Kafka's own ConfigCommand, unauthenticated, describing broker 1 through the controller listener."""
    config = tmp_path / "admin.properties"
    config.write_text("request.timeout.ms=2000\ndefault.api.timeout.ms=4000\n")
    java = shutil.which("java")
    assert java is not None
    address = f"127.0.0.1:{broker.settings.controller_port}"
    cmd = [java, "-cp", classpath(broker.settings.cache_dir), "kafka.admin.ConfigCommand"]
    cmd += ["--bootstrap-controller", address, "--command-config", str(config)]
    cmd += ["--describe", "--entity-type", "brokers", "--entity-name", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_the_local_broker_serves_clients_only_over_sasl_ssl_with_a_verified_certificate(
    secured: LocalBroker, tmp_path: Path
) -> None:
    security = secured.client_security()
    assert security.protocol == "SASL_SSL"
    assert security.sasl_mechanism == "SCRAM-SHA-512"
    found = asyncio.run(describe(secured.bootstrap, [PROMPTS_TOPIC, TOKENS_TOPIC], security))
    assert set(found) == {PROMPTS_TOPIC, TOKENS_TOPIC}
    # No plain-text way in: the one client listener speaks TLS.
    with pytest.raises(Exception, match="Unable to bootstrap"):
        asyncio.run(cluster_metadata(secured.bootstrap, 5, PLAINTEXT))
    # TLS without the local CA: the broker's certificate is not trusted (system store only).
    untrusted = replace(security, ssl_cafile="")
    with pytest.raises(KafkaAuthenticationError, match="TLS handshake failed"):
        asyncio.run(cluster_metadata(secured.bootstrap, 5, untrusted))
    # Nor to the KRaft controller's admin APIs (an admin client over --bootstrap-controller).
    unauthenticated = admin_over_the_controller(secured, tmp_path)
    assert unauthenticated.returncode != 0, unauthenticated.stdout
    key_modes = {p.name: p.stat().st_mode & 0o777 for p in secured.tls.directory.iterdir()}
    assert key_modes["ca.key"] == key_modes["broker.key"] == key_modes["broker-keystore.pem"] == 0o600
    assert secured.properties_path.stat().st_mode & 0o777 == 0o600  # it holds the SCRAM password


def test_the_whole_system_answers_and_hydrates_over_sasl_ssl(secured: LocalBroker, tmp_path: Path) -> None:
    bootstrap, env = secured.bootstrap, secured.client_security().env()
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    runner = ServiceRunner(tmp_path / "logs")
    try:
        start_worker(
            runner, bootstrap, "worker", unique("group"), {**env, "TOKENLOG_WORKER_COALESCE_MS": "0"}
        )
        _, sessions_url = start_sessions(
            runner, bootstrap, "sessions", unique("sessions"), data_dir=str(tmp_path / "sessions"), env=env
        )
        stack = Stack(bootstrap, runner, sessions_url=sessions_url)
        gw = stack.start_gateway("gateway", env)
        cid = unique("secure")

        async def go() -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
            async with Client(gw.url, stack.token("alice")) as client:
                accepted = await client.prompt(cid, "over TLS [[tokens=12]] [[rate=200]]", prompt_id="p-1")
                follower = client.follow(cid, transport="sse", cursor="beginning")
                await follower.once(until=lambda f: f.get("type") == "response.completed", timeout_s=45)
                streamed = "".join(f["text"] for f in follower.received if f["type"] == "token")
                turns: list[Any] = []
                for _ in range(300):  # the session app trails the stream by up to a second
                    with contextlib.suppress(ClientError):  # 404 until the session app has applied it
                        turns = (await client.snapshot(cid))["turns"]
                    if turns and turns[-1]["answer"] == streamed:
                        break
                    await asyncio.sleep(0.1)
                return accepted, follower.received, turns

        accepted, frames, turns = asyncio.run(go())
        assert accepted["duplicate"] is False
        types = [f["type"] for f in frames]
        assert (types[0], types[-1]) == ("response.started", "response.completed"), types
        streamed = "".join(f["text"] for f in frames if f["type"] == "token")
        assert streamed
        assert [(t["prompt_id"], t["status"], t["answer"]) for t in turns] == [("p-1", "completed", streamed)]

        # The session app itself materialised it from the secured topics (not only the gateway's tail).
        # It trails the gateway's (folded) snapshot by up to a second or so.
        found: list[Any] = []

        def materialised() -> bool:
            status, body = get_snapshot(sessions_url, cid)
            found[:] = [status, [t["answer"] for t in body.get("turns", ())]]
            return status == 200 and bool(found[1])

        wait_until(materialised, 30, what="the session app's snapshot")
        assert found == [200, [streamed]]
        # The log holds it as streamed, read and replayed through the secured listener.
        logged = asyncio.run(
            read_transcript(
                bootstrap,
                accepted["partition"],
                [cid],
                all_finished(["p-1"]),
                security=secured.client_security(),
            )
        )
        assert [a.text for a in logged.answers.values()] == [streamed]
        source = ReplaySource(bootstrap, security=secured.client_security())
        replayed, _ = asyncio.run(source.replay(Selection(conversation=cid)))
        assert [(t.text, t.chain) for t in replayed.turns()] == [(streamed, "intact")]
    finally:
        runner.stop_all()


@pytest.mark.parametrize("service", ["worker", "sessions", "gateway"])
def test_a_wrong_password_stops_a_service_at_start_up_naming_authentication(
    secured: LocalBroker, tmp_path: Path, service: str
) -> None:
    wrong: KafkaSecurity = replace(secured.client_security(), password=secrets.token_hex(16))
    env = wrong.env()
    runner = ServiceRunner(tmp_path / "logs")
    starts: dict[str, Callable[[], object]] = {
        "worker": lambda: start_worker(runner, secured.bootstrap, "worker", unique("group"), env),
        "sessions": lambda: start_sessions(
            runner, secured.bootstrap, "sessions", unique("s"), data_dir=str(tmp_path / "s"), env=env
        ),
        "gateway": lambda: Stack(secured.bootstrap, runner).start_gateway("gateway", env),
    }
    began = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="exited at start-up") as failed:
            starts[service]()
    finally:
        runner.stop_all()
    took = time.monotonic() - began
    assert "Kafka authentication failed" in str(failed.value), str(failed.value)[-1500:]
    assert "KAFKA_SASL_PASSWORD" in str(failed.value)
    assert wrong.password not in str(failed.value)
    print(f"\n{service} gave up after {took:.1f}s")  # it gave up, not timed out (the match above)
