"""The supervisor of ``make run`` with real (tiny) processes: restarts with a console line, start
order, readiness deadline, and giving up on a service that cannot start."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.process import pid_alive
from infra.restarts import RestartPolicy
from infra.services import ServiceSpec
from infra.supervisor import Phase, Supervisor

FAST = RestartPolicy(initial_s=0.01, max_s=0.05, stable_s=30.0, quick_exit_s=5.0, max_failed_starts=5)
SLEEP = "import time; time.sleep(60)"


def _spec(name: str, code: str, ready: Callable[[], bool] | None = None) -> ServiceSpec:
    return ServiceSpec(name=name, argv=(sys.executable, "-c", code), ready=ready)


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def make(tmp_path: Path, lines: list[str]) -> Iterator[Callable[..., Supervisor]]:
    made: list[Supervisor] = []

    def build(*specs: ServiceSpec, ready_timeout_s: float = 30.0) -> Supervisor:
        sup = Supervisor(specs, dict(os.environ), tmp_path / "logs", FAST, ready_timeout_s, say=lines.append)
        made.append(sup)
        return sup

    yield build
    for sup in made:
        sup.stop()


def _tick_until(sup: Supervisor, done: Callable[[], bool], timeout_s: float = 20.0) -> str | None:
    deadline = time.monotonic() + timeout_s
    while not done():
        verdict = sup.tick()
        if verdict is not None:
            return verdict
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
    return None


def test_a_service_that_exits_is_restarted_with_a_console_line(
    make: Callable[..., Supervisor], lines: list[str], tmp_path: Path
) -> None:
    marker = tmp_path / "crashed-once"
    code = (
        f"import pathlib, sys, time\np = pathlib.Path({str(marker)!r})\n"
        "if not p.exists():\n    p.touch(); sys.exit(3)\ntime.sleep(60)"
    )
    sup = make(_spec("flaky", code, ready=marker.exists))

    def up_again() -> bool:
        restarted = sum(line.startswith("flaky started") for line in lines) == 2
        return restarted and sup.services[0].phase is Phase.READY

    assert _tick_until(sup, up_again) is None
    log = tmp_path / "logs" / "flaky.log"
    assert f"flaky exited with code 3; restarting in 0.01 s (log: {log})" in lines
    assert sup.services[0].phase is Phase.READY
    assert sup.services[0].proc.running()


def test_a_killed_service_is_restarted_and_named_by_its_signal(
    make: Callable[..., Supervisor], lines: list[str]
) -> None:
    sup = make(_spec("steady", SLEEP))
    _tick_until(sup, lambda: sup.all_ready)
    first = sup.services[0].proc.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert _tick_until(sup, lambda: any("is back" in line for line in lines)) is None
    assert any(line.startswith("steady exited with code -9 (SIGKILL); restarting in") for line in lines)
    assert sup.services[0].proc.pid not in (None, first)
    assert not pid_alive(first)


def test_a_service_that_keeps_failing_to_start_stops_the_stack(
    make: Callable[..., Supervisor], lines: list[str]
) -> None:
    sup = make(_spec("broken", "import sys; sys.exit(2)", ready=lambda: False), _spec("later", SLEEP))
    verdict = _tick_until(sup, lambda: False)
    assert verdict is not None
    assert "broken exited with code 2; it failed to start 5 times in a row, stopping everything" in verdict
    assert sum(line.startswith("broken started (PID") for line in lines) == 5
    assert [line for line in lines if "restarting in" in line][-1].startswith("broken exited with code 2")
    assert sup.services[1].phase is Phase.WAITING  # never started: its predecessor was never ready


def test_services_start_in_order_each_once_the_one_before_is_ready(
    make: Callable[..., Supervisor], lines: list[str]
) -> None:
    gate: list[bool] = []
    sup = make(_spec("first", SLEEP, ready=lambda: bool(gate)), _spec("second", SLEEP))
    for _ in range(20):
        assert sup.tick() is None
    assert sup.services[1].phase is Phase.WAITING
    gate.append(True)
    _tick_until(sup, lambda: sup.all_ready)
    assert [line.split(" (")[0] for line in lines if "started" in line] == ["first started", "second started"]
    assert lines[-1] == "ready — press Ctrl-C to stop"


def test_a_service_not_ready_in_time_is_stopped_and_started_again(
    make: Callable[..., Supervisor], lines: list[str]
) -> None:
    sup = make(_spec("slow", SLEEP, ready=lambda: False), ready_timeout_s=0.2)
    _tick_until(sup, lambda: sum("started" in line for line in lines) >= 2)
    assert any(line.startswith("slow was not ready after 0.2 s; restarting in") for line in lines)


def test_stop_ends_every_service_last_first(make: Callable[..., Supervisor], lines: list[str]) -> None:
    sup = make(_spec("a", SLEEP), _spec("b", SLEEP))
    _tick_until(sup, lambda: sup.all_ready)
    pids = [s.proc.pid for s in sup.services]
    sup.stop()
    assert [line for line in lines if line.startswith("stopping")] == ["stopping b", "stopping a"]
    assert not any(pid is not None and pid_alive(pid) for pid in pids)
