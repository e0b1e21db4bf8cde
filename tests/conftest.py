"""Session fixtures: one real Kafka for the whole run, unique names, service processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.errors import BrokerError
from infra.settings import TopicSettings
from infra.topics import ensure, topic_specs
from tests.harness import KafkaForTests, ServiceRunner, kafka_for_tests, unique


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[KafkaForTests]:
    """The session's broker. A broker that cannot start fails the run with its log tail."""
    try:
        with kafka_for_tests(tmp_path_factory.mktemp("broker")) as found:
            capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
            assert capture is not None
            with capture.global_and_fixture_disabled():
                print(f"\nkafka for this session: {found.describe()}", flush=True)
            yield found
    except BrokerError as exc:
        pytest.fail(f"Kafka is not available for the integration tests:\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def bootstrap(kafka: KafkaForTests) -> str:
    return kafka.bootstrap


@pytest.fixture(scope="session")
def topic_settings() -> TopicSettings:
    return TopicSettings()


@pytest.fixture(scope="session")
def provisioned(bootstrap: str, topic_settings: TopicSettings) -> TopicSettings:
    """The pipeline's topics exist on the session's broker."""
    asyncio.run(ensure(bootstrap, topic_specs(topic_settings)))
    return topic_settings


@pytest.fixture
def conversation_id() -> str:
    return unique("conv")


@pytest.fixture
def group_id() -> str:
    return unique("group")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[ServiceRunner]:
    runner = ServiceRunner(tmp_path / "logs")
    try:
        yield runner
    finally:
        runner.stop_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Gateway tests run last. Every test shares the session's topics, and the session-state tests
    start apps that read those topics from the beginning; the gateway tests write the most (long
    and flooding answers), so running them after keeps the others' catch-up short."""
    items.sort(key=lambda item: "tests/gateway/" in item.nodeid or item.nodeid.startswith("gateway/"))


class NothingSkipped:
    """The suite has no skips and no expected failures: a test that did not run (a skip, at
    collection too) or whose failure was expected (xfail, xpass) fails the session, exit 1,
    rather than passing it quietly."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def _note(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped or hasattr(report, "wasxfail"):
            self.skipped.append(report.nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.skipped:
            return
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.skipped:
            names = ", ".join(sorted(set(self.skipped)))
            terminalreporter.write_line(
                f"error: skipped or xfail, which this suite forbids ({len(self.skipped)}): {names}", red=True
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(NothingSkipped(), "tokenlog-nothing-skipped")
