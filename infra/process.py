"""Start and stop processes by PID: the broker, the services of ``make run``, test fixtures.

A process is started in its own session (so Ctrl-C in a terminal reaches the supervisor only,
which then stops children in order), its output goes to a log file, and it is stopped with
SIGTERM, then SIGKILL after a grace period. A PID file lets another command (``status``,
``stop``) find it; before signalling a PID read from a file we check that the process still
runs the command we started, so a recycled PID is never killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ProcessError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_until(
    condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; raise ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f}s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class ManagedProcess:
    """One child process, started in its own session, logging to ``log_path``."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    pid_path: Path | None = None
    marker: str | None = None
    """A string that must appear in the command line of the PID read back from ``pid_path``."""

    _popen: subprocess.Popen[bytes] | None = None
    _pid: int | None = None
    _last_exit_code: int | None = None

    @property
    def pid(self) -> int | None:
        if self._pid is None and self.pid_path is not None:
            self._pid = read_pid(self.pid_path, self.marker)
        return self._pid

    def start(self) -> int:
        if self.running():
            raise ProcessError(f"{self.name} already runs as PID {self.pid}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self.env is None else self.env)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(  # noqa: S603 - argv is built by the project, never a shell string
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self._pid = self._popen.pid
        if self.pid_path is not None:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.write_text(f"{self._pid}\n")
        return self._pid

    def running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def exit_code(self) -> int | None:
        """The exit code of the process this object started (also after ``stop``); None while
        it runs or when it was not started by this object."""
        return self._last_exit_code if self._popen is None else self._popen.poll()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Idempotent."""
        pid = self.pid
        if pid is None or not self.running():
            self._forget()
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            try:
                wait_until(lambda: not self.running(), wait_s, what=f"{self.name} to exit")
                break
            except TimeoutError:
                continue
        if self.running():
            raise ProcessError(f"{self.name} (PID {pid}) did not exit after SIGKILL")
        self._forget()

    def kill(self) -> None:
        """SIGKILL at once (for failure tests)."""
        pid = self.pid
        if pid is not None and self.running():
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not self.running(), 10.0, what=f"{self.name} to die")
        self._forget()

    def _forget(self) -> None:
        if self._popen is not None:
            self._last_exit_code = self._popen.poll()
        self._popen = None
        self._pid = None
        if self.pid_path is not None:
            self.pid_path.unlink(missing_ok=True)


def read_pid(pid_path: Path, marker: str | None = None) -> int | None:
    """The live PID in ``pid_path`` whose command line contains ``marker``, else None."""
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    if marker is not None and not any(marker in part for part in cmdline(pid)):
        return None
    return pid
