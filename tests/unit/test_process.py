"""Processes are started in their own session and stopped by PID, never by name."""

from __future__ import annotations

import sys
from pathlib import Path

from infra.process import ManagedProcess, pid_alive, read_pid


def _sleeper(tmp_path: Path, code: str = "import time; time.sleep(60)") -> ManagedProcess:
    return ManagedProcess(
        "sleeper",
        [sys.executable, "-c", code],
        tmp_path / "sleeper.log",
        pid_path=tmp_path / "s.pid",
        marker="time.sleep",
    )


def test_stop_terminates_the_process_and_removes_its_pid_file(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    pid = proc.start()
    assert pid_alive(pid)
    assert read_pid(tmp_path / "s.pid", "time.sleep") == pid
    proc.stop()
    assert not pid_alive(pid)
    assert not (tmp_path / "s.pid").exists()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    code = (
        "import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('armed', flush=True); time.sleep(60)"
    )
    proc = _sleeper(tmp_path, code)
    pid = proc.start()
    from infra.process import wait_until

    wait_until(lambda: "armed" in proc.log_path.read_text(), 10, what="child to ignore SIGTERM")
    proc.stop(grace_s=0.5)
    assert not pid_alive(pid)


def test_another_command_can_stop_a_process_from_its_pid_file(tmp_path: Path) -> None:
    first = _sleeper(tmp_path)
    pid = first.start()
    second = ManagedProcess(
        "sleeper", [], tmp_path / "x.log", pid_path=tmp_path / "s.pid", marker="time.sleep"
    )
    assert second.running()
    second.stop()
    assert not pid_alive(pid)
    first.stop()  # idempotent once gone


def test_a_recycled_pid_running_something_else_is_not_ours(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    pid = proc.start()
    try:
        assert read_pid(tmp_path / "s.pid", marker="kafka.Kafka") is None
        assert read_pid(tmp_path / "s.pid", marker="time.sleep") == pid
    finally:
        proc.stop()


def test_the_exit_code_is_kept_after_stop(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path, "import sys, time; time.sleep(0.2); sys.exit(3)")
    proc.start()
    from infra.process import wait_until

    wait_until(lambda: not proc.running(), 10, what="child to exit")
    proc.stop()
    assert proc.exit_code() == 3
