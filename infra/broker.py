"""A real Apache Kafka 4.x broker (KRaft, combined broker+controller) started from Maven jars.

Usage::

    python -m infra.broker start|stop|status|logs|classpath|version

Steps of ``start``:

1. Resolve the broker's runtime classpath with Maven from ``infra/kafka/pom.xml`` (the Kafka
   version is pinned there). Jars live in Maven's local repository; the classpath is cached in
   ``.local/cache/`` keyed by the pom's hash, so a warm start does not run Maven at all.
2. Write ``server.properties`` for a single node on 127.0.0.1 (settings tuned for one node:
   replication factor 1 for internal topics, no initial rebalance delay).
3. Format the storage with Kafka's own ``StorageTool`` once; the data directory survives
   restarts, so a restarted broker keeps its log. ``TOKENLOG_KAFKA_SECURITY=sasl_ssl``: a CA and a
   broker certificate are made first (``infra/tls.py``), the client listener is SASL_SSL, and the
   SCRAM-SHA-512 user is added here (``--add-scram``).
4. Start ``kafka.Kafka`` in its own session (PID file in the broker home) and wait until it
   answers a metadata request from an admin client, not just a TCP connect.

``stop`` sends SIGTERM (a controlled shutdown), then SIGKILL after a grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import BrokerError, BrokerUnreachableError, KafkaAuthenticationError
from infra.kafka_client import PLAINTEXT, KafkaSecurity, diagnose
from infra.process import ManagedProcess, free_port, read_pid, tail
from infra.settings import REPO_ROOT, BrokerSettings, InfraSettings
from infra.tls import TlsFiles, make_tls

KAFKA_DIR = REPO_ROOT / "infra" / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J2 = KAFKA_DIR / "log4j2.xml"
MAIN_CLASS = "kafka.Kafka"


# --------------------------------------------------------------------------- pure parts


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (22 chars), never
    starting with ``-`` (StorageTool would read it as an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


SCRAM = "SCRAM-SHA-512"
"""The SASL mechanism of the local ``sasl_ssl`` broker."""


def server_properties(
    settings: BrokerSettings,
    data_dir: Path,
    node_id: int = 1,
    voters: str | None = None,
    replicas: int = 1,
    *,
    tls: TlsFiles | None = None,
    sasl_password: str = "",
) -> dict[str, str]:
    """``server.properties`` of a combined broker+controller node on loopback: alone (its own
    quorum), or one of a cluster (``voters``: every node's ``id@host:controller_port``; internal
    topics with ``replicas`` copies and ``replicas - 1`` in sync).

    With ``settings.security == "sasl_ssl"`` (``tls`` and ``sasl_password`` given) every client
    listener is SASL_SSL with SCRAM-SHA-512 only, and brokers talk to each other on it too, as
    ``settings.sasl_username``; no client listener is left in plain text. The KRaft controller
    listener is SASL_PLAINTEXT with PLAIN on loopback (SCRAM cannot guard it: its credentials live
    in the metadata the controller serves), its one user ``controller`` with the same password."""
    in_sync = str(max(1, replicas - 1))
    secured = settings.security == "sasl_ssl"
    client = "SASL_SSL" if secured else "PLAINTEXT"
    listeners = f"{client}://127.0.0.1:{settings.port},CONTROLLER://127.0.0.1:{settings.controller_port}"
    advertised = f"{client}://127.0.0.1:{settings.port}"
    protocols = f"{client}:{client},CONTROLLER:{'SASL_PLAINTEXT' if secured else 'PLAINTEXT'}"
    names = [client]
    for i, (bound, shown) in enumerate(settings.proxied):
        listeners += f",PROXIED{i}://127.0.0.1:{bound}"
        advertised += f",PROXIED{i}://127.0.0.1:{shown}"
        protocols += f",PROXIED{i}:{client}"
        names.append(f"PROXIED{i}")
    security: dict[str, str] = {}
    if secured:
        if tls is None or not sasl_password:
            raise BrokerError("a sasl_ssl broker needs its TLS files and the SCRAM user's password")
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{settings.sasl_username}" password="{sasl_password}";'
        )
        # The controller listener: SASL PLAIN (its one user in the JAAS config, not in the metadata
        # SCRAM needs), so nothing on loopback reaches the controller without the password either.
        controller_jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="controller" password="{sasl_password}" user_controller="{sasl_password}";'
        )
        security = {
            "sasl.enabled.mechanisms": SCRAM,
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": controller_jaas,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            **{f"listener.name.{name.lower()}.{SCRAM.lower()}.sasl.jaas.config": jaas for name in names},
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "ssl.client.auth": "none",
            "ssl.endpoint.identification.algorithm": "https",
        }
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@127.0.0.1:{settings.controller_port}",
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": protocols,
        **security,
        "log.dirs": str(data_dir),
        "auto.create.topics.enable": str(settings.auto_create_topics).lower(),
        "num.partitions": "1",
        # One node: every internal topic with one replica, or groups and transactions hang.
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": in_sync,
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": in_sync,
        "default.replication.factor": str(replicas),
        "min.insync.replicas": in_sync,
        # Tests and demos join groups constantly: no 3 s wait for more members.
        "group.initial.rebalance.delay.ms": "0",
        # The cleaner's dedupe buffer defaults to 128 MiB on heap; compaction of small
        # changelogs needs far less.
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.cleaner.threads": "1",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.segment.bytes": str(256 * 1024 * 1024),
        "log.retention.check.interval.ms": "60000",
        "delete.topic.enable": "true",
    }


def render_properties(props: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items())


def jvm_flags(settings: BrokerSettings, cds_archive: Path | None, dump_archive: bool) -> list[str]:
    """Small-box JVM flags: serial GC, C1 only, bounded heap, class-data sharing."""
    heap_mb = _megabytes(settings.heap)
    flags = [
        f"-Xms{max(64, heap_mb // 2)}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-Xlog:cds=error,cds+dynamic=error",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J2}",
        f"-Dkafka.logs.dir={settings.home / 'logs'}",
    ]
    if cds_archive is not None:
        if dump_archive:
            flags.append(f"-XX:ArchiveClassesAtExit={cds_archive}")
        else:
            flags += [f"-XX:SharedArchiveFile={cds_archive}", "-Xshare:auto"]
    return flags


def _megabytes(heap: str) -> int:
    heap = heap.strip().lower()
    if heap.endswith("g"):
        return int(heap[:-1]) * 1024
    if heap.endswith("m"):
        return int(heap[:-1])
    raise ValueError(f"heap must look like 512m or 1g, got {heap!r}")


# --------------------------------------------------------------------------- classpath


def pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def classpath(cache_dir: Path, refresh: bool = False) -> str:
    """The broker's runtime classpath, resolved by Maven once per pom version."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"kafka-classpath-{pom_digest()}.txt"
    if not refresh and cached.exists():
        cp = cached.read_text().strip()
        if cp and all(Path(jar).exists() for jar in cp.split(os.pathsep)):
            return cp
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not on PATH: it resolves the Kafka jars")
    tmp = cached.with_suffix(".tmp")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:build-classpath",
        f"-Dmdep.outputFile={tmp}",
        "-Dmdep.includeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0 or not tmp.exists():
        raise BrokerError(
            "Maven could not resolve the Kafka jars",
            log_tail=(proc.stdout + proc.stderr)[-4000:],
        )
    tmp.replace(cached)
    return cached.read_text().strip()


def kafka_version(cp: str) -> str:
    """The Kafka version on the classpath (from the kafka-clients jar name)."""
    for jar in cp.split(os.pathsep):
        name = Path(jar).name
        if name.startswith("kafka-clients-") and name.endswith(".jar"):
            return name[len("kafka-clients-") : -len(".jar")]
    raise BrokerError("kafka-clients is not on the resolved classpath")


# --------------------------------------------------------------------------- the broker


async def cluster_metadata(
    bootstrap: str, timeout_s: float, security: KafkaSecurity = PLAINTEXT
) -> dict[str, object]:
    """``describe_cluster`` of ``bootstrap``; ``BrokerUnreachableError`` when it lists no broker yet,
    ``KafkaAuthenticationError`` when the broker refuses ``security``'s credentials."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000) + 1000,
        **security.client_kwargs(),
    )
    try:
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
        except KafkaConnectionError:
            await diagnose(bootstrap, security, timeout_s)
            raise
        cluster: dict[str, object] = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    finally:
        await asyncio.wait_for(admin.close(), 5)
    if not cluster.get("brokers"):
        raise BrokerUnreachableError("metadata answered with no brokers yet")
    return cluster


def wait_for_metadata(
    bootstrap: str,
    timeout_s: float,
    alive: ManagedProcess | None = None,
    log: Path | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> dict[str, object]:
    """Block until ``bootstrap`` answers a metadata request (admin client describe_cluster); a
    refused credential (``KafkaAuthenticationError``) ends the wait at once."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connects are expected here
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive.running():
            raise BrokerError(
                f"the broker exited during start-up (exit code {alive.exit_code()})",
                log_tail=_log_tail(log),
            )
        try:
            return asyncio.run(cluster_metadata(bootstrap, 2.0, security))
        except KafkaAuthenticationError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ready yet"
            last = exc
            time.sleep(0.2)
    raise BrokerUnreachableError(
        f"no metadata answer from {bootstrap} after {timeout_s:.0f}s (last error: {last!r})",
        log_tail=_log_tail(log),
    )


def _log_tail(log: Path | None) -> str:
    if log is None:
        return ""
    server_log = log.parent / "server.log"
    return f"{tail(log, 20)}\n--- server.log ---\n{tail(server_log, 60)}"


@dataclass
class LocalBroker:
    """The single-node broker living in ``settings.home``."""

    settings: BrokerSettings
    _proc: ManagedProcess | None = None
    """The process this object started (kept so it is reaped when it stops)."""
    node_id: int = 1
    voters: str | None = None
    """Set for a node of a ``LocalCluster``: the quorum's voters."""
    replicas: int = 1

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def stdout_log(self) -> Path:
        return self.home / "logs" / "kafka.out"

    @property
    def server_log(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def properties_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def version(self) -> str:
        return kafka_version(classpath(self.settings.cache_dir))

    def _process(self, argv: list[str] | None = None) -> ManagedProcess:
        return ManagedProcess(
            name=f"kafka broker {self.bootstrap}",
            argv=argv or [],
            log_path=self.stdout_log,
            pid_path=self.home / "kafka.pid",
            marker=str(self.properties_path),
            cwd=self.home,
        )

    def pid(self) -> int | None:
        return read_pid(self.home / "kafka.pid", str(self.properties_path))

    def running(self) -> bool:
        return self.pid() is not None

    def cluster_id(self) -> str:
        path = self.home / "cluster.id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id() + "\n")
        return path.read_text().strip()

    def _cds(self, cp: str) -> tuple[Path, bool]:
        """The class-data archive to use, or (when there is none yet) a private file to dump
        one into at exit; ``stop`` publishes it under the shared name once the JVM is gone,
        so no broker ever maps a half-written archive."""
        digest = hashlib.sha256((cp + sys_java_version()).encode()).hexdigest()[:16]
        archive = self.settings.cache_dir / f"kafka-{digest}.jsa"
        pending = self.home / "cds-pending"
        if archive.exists():
            pending.unlink(missing_ok=True)
            return archive, False
        private = self.home / f"kafka-{digest}.jsa.{uuid.uuid4().hex[:8]}"
        pending.write_text(f"{private}\n{archive}\n")
        return private, True

    def _publish_cds(self) -> None:
        pending = self.home / "cds-pending"
        try:
            private, archive = pending.read_text().split()
        except (FileNotFoundError, ValueError):
            return
        pending.unlink(missing_ok=True)
        if Path(private).exists() and not Path(archive).exists():
            Path(private).replace(archive)
        else:
            Path(private).unlink(missing_ok=True)

    @property
    def secured(self) -> bool:
        return self.settings.security == "sasl_ssl"

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.home / "tls")

    def sasl_password(self) -> str:
        """The SCRAM user's password: the setting, or one made at first start and kept (0600)."""
        if self.settings.sasl_password:
            return self.settings.sasl_password
        path = self.home / "sasl.password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(24))
        return path.read_text().strip()

    def client_security(self) -> KafkaSecurity:
        """What a client needs to reach this broker (the ``KAFKA_*`` variables: ``.env()``)."""
        if not self.secured:
            return PLAINTEXT
        return KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism=SCRAM,
            username=self.settings.sasl_username,
            password=self.sasl_password(),
            ssl_cafile=str(self.tls.ca),
        )

    def _scram_argument(self) -> list[str]:
        """``--add-scram`` for the SCRAM user (a secured broker), checked for the characters the
        StorageTool's ``[name=...,password=...]`` syntax cannot carry."""
        if not self.secured:
            return []
        name, password = self.settings.sasl_username, self.sasl_password()
        for label, value in (("KAFKA_SASL_USERNAME", name), ("KAFKA_SASL_PASSWORD", password)):
            if not value or any(c in value for c in ',[]="\\ '):
                raise BrokerError(
                    f'{label} for the local broker must be non-empty, without , [ ] = " \\ or spaces'
                )
        return ["--add-scram", f"{SCRAM}=[name={name},password={password}]"]

    def format_storage(self, cp: str) -> None:
        """Format the data directory with Kafka's StorageTool (idempotent); a secured broker's
        SCRAM user is added here (``scram.user`` in the home records who)."""
        marker = self.home / "scram.user"
        if (self.data_dir / "meta.properties").exists():
            if self.secured and (
                not marker.exists() or marker.read_text().strip() != self.settings.sasl_username
            ):
                raise BrokerError(
                    f"the storage in {self.data_dir} was formatted without the SCRAM user "
                    f"{self.settings.sasl_username!r}: remove that directory (its log goes with it) or "
                    "use another TOKENLOG_KAFKA_HOME to start it with TOKENLOG_KAFKA_SECURITY=sasl_ssl"
                )
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            _java(),
            *jvm_flags(self.settings, None, False),
            "-cp",
            cp,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id(),
            "-c",
            str(self.properties_path),
            "--ignore-formatted",
            *self._scram_argument(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            raise BrokerError("StorageTool format failed", log_tail=(proc.stdout + proc.stderr)[-4000:])
        if self.secured:
            marker.write_text(self.settings.sasl_username + "\n")

    def start(self, wait: bool = True) -> float:
        """Start the broker (no-op if it already runs); return seconds until it answered."""
        began = time.monotonic()
        if self.running():
            if wait:
                wait_for_metadata(
                    self.bootstrap, self.settings.start_timeout_s, security=self.client_security()
                )
            return time.monotonic() - began
        cp = classpath(self.settings.cache_dir)
        for sub in ("logs", "data"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        props = server_properties(
            self.settings,
            self.data_dir,
            self.node_id,
            self.voters,
            self.replicas,
            tls=make_tls(self.tls.directory) if self.secured else None,
            sasl_password=self.sasl_password() if self.secured else "",
        )
        self.properties_path.unlink(missing_ok=True)  # holds the SCRAM password when secured: 0600
        fd = os.open(self.properties_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(render_properties(props))
        self.format_storage(cp)
        archive, dump = self._cds(cp)
        argv = [
            _java(),
            *jvm_flags(self.settings, archive, dump),
            "-cp",
            cp,
            MAIN_CLASS,
            str(self.properties_path),
        ]
        proc = self._process(argv)
        proc.start()
        self._proc = proc
        if wait:
            try:
                wait_for_metadata(
                    self.bootstrap,
                    self.settings.start_timeout_s,
                    alive=proc,
                    log=self.stdout_log,
                    security=self.client_security(),
                )
            except BaseException:
                proc.stop(grace_s=5)
                self._proc = None
                raise
        return time.monotonic() - began

    def stop(self, grace_s: float = 30.0) -> None:
        (self._proc or self._process()).stop(grace_s=grace_s)
        self._proc = None
        self._publish_cds()

    def kill(self) -> None:
        """SIGKILL (for failure tests); the log stays, the next start recovers it."""
        (self._proc or self._process()).kill()
        self._proc = None


@dataclass
class LocalCluster:
    """``size`` combined broker+controller nodes on loopback forming one KRaft quorum, each in
    ``home/node-N`` on ports of its own; internal topics replicated ``size`` times with
    ``size - 1`` in sync. The same code as the single broker, so the system runs unchanged on it."""

    home: Path
    size: int = 3
    heap: str = "384m"
    nodes: list[LocalBroker] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.nodes:
            return
        ports = [(free_port(), free_port()) for _ in range(self.size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        cluster_id = new_cluster_id()
        for i, (port, controller) in enumerate(ports):
            home = self.home / f"node-{i + 1}"
            home.mkdir(parents=True, exist_ok=True)
            (home / "cluster.id").write_text(cluster_id + "\n")
            settings = BrokerSettings(
                home=home, port=port, controller_port=controller, heap=self.heap, start_timeout_s=180
            )
            self.nodes.append(LocalBroker(settings, node_id=i + 1, voters=voters, replicas=self.size))

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        return self.nodes[node_id - 1]

    def start(self) -> None:
        """Every node at once (a quorum needs a majority up), then until all of them answer."""
        for node in self.nodes:
            node.start(wait=False)
        try:
            for node in self.nodes:
                node.start(wait=True)  # already running: waits for its metadata answer
            deadline = time.monotonic() + 180
            while True:
                brokers = wait_for_metadata(self.bootstrap, 60).get("brokers")
                if isinstance(brokers, list) and len(brokers) >= self.size:
                    break
                if time.monotonic() > deadline:
                    raise BrokerError(f"the cluster did not gather {self.size} brokers")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(grace_s=20)


def client_security(settings: InfraSettings) -> KafkaSecurity:
    """How this process's clients reach the system's broker: the ``KAFKA_SECURITY_PROTOCOL`` family
    for a cluster named by ``KAFKA_BOOTSTRAP_SERVERS``, else what the local broker asks for."""
    if settings.uses_external_cluster:
        return settings.security
    return LocalBroker(settings.broker).client_security()


def sys_java_version() -> str:
    proc = subprocess.run([_java(), "-version"], capture_output=True, text=True, check=False)  # noqa: S603
    return proc.stderr.strip()


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java is not on PATH (Java 17+ runs the broker)")
    return java


# --------------------------------------------------------------------------- CLI


def run_cluster(nodes: int) -> int:
    """``cluster``: an ephemeral N-node cluster in the foreground (a temporary home, free ports)
    until Ctrl-C; what to point the services at is printed."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tokenlog-cluster-") as home:
        cluster = LocalCluster(Path(home), size=nodes)
        cluster.start()
        try:
            print(f"kafka cluster of {nodes} ready: KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}")
            print(
                f"  topics: TOKENLOG_TOPIC_REPLICATION_FACTOR={nodes} "
                f"TOKENLOG_TOPIC_MIN_INSYNC_REPLICAS={max(1, nodes - 1)} python -m infra.topics ensure"
            )
            for node in cluster.nodes:
                print(f"  node {node.node_id}: {node.bootstrap} (PID {node.pid()}, home {node.home})")
            print("Ctrl-C stops it (and deletes its data)", flush=True)
            while all(node.running() for node in cluster.nodes):
                time.sleep(1)
            print("a node exited; stopping the cluster", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.broker", description=__doc__.split("\n")[0])
    parser.add_argument(
        "command", choices=["start", "stop", "status", "logs", "classpath", "version", "cluster"]
    )
    parser.add_argument("-n", "--lines", type=int, default=80, help="lines for `logs`")
    parser.add_argument("--nodes", type=int, default=3, help="nodes for `cluster`")
    args = parser.parse_args(argv)
    if args.command == "cluster":
        return run_cluster(args.nodes)
    settings = InfraSettings.from_env()
    broker = LocalBroker(settings.broker)

    if settings.uses_external_cluster and args.command in ("start", "stop"):
        print(
            f"KAFKA_BOOTSTRAP_SERVERS={settings.bootstrap_servers}: using that cluster, "
            "no local broker is started or stopped"
        )
        if args.command == "start":
            wait_for_metadata(settings.bootstrap, settings.broker.start_timeout_s)
        return 0
    try:
        if args.command == "start":
            was_running = broker.running()
            took = broker.start()
            state = "already running" if was_running else f"ready in {took:.1f}s"
            print(
                f"kafka {broker.version()} {state} at {broker.bootstrap} "
                f"(PID {broker.pid()}, data {broker.data_dir})"
            )
        elif args.command == "stop":
            pid = broker.pid()
            broker.stop()
            print(f"kafka stopped (was PID {pid})" if pid else "kafka was not running")
        elif args.command == "status":
            pid = broker.pid()
            if pid is None:
                print(f"kafka not running (home {broker.home})")
                return 3
            cluster = wait_for_metadata(broker.bootstrap, 10, security=broker.client_security())
            print(
                f"kafka {broker.version()} running at {broker.bootstrap} (PID {pid}, "
                f"cluster {cluster.get('cluster_id')}, data {broker.data_dir})"
            )
        elif args.command == "logs":
            print(tail(broker.server_log, args.lines))
        elif args.command == "classpath":
            print(classpath(settings.broker.cache_dir, refresh=True))
        elif args.command == "version":
            print(broker.version())
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
