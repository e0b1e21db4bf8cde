"""Lower a background process's CPU priority, so that on a shared machine the processes on a
client's path (broker, gateway) run first when every core is busy.

Two knobs, because Linux has two: the process's nice value, which its threads inherit when they
start, and, with ``CONFIG_SCHED_AUTOGROUP`` (``/proc/sys/kernel/sched_autogroup_enabled``), the
nice value of its *autogroup*. Every session (``setsid``) is an autogroup, and the scheduler
shares the CPU between autogroups first: a process started in a session of its own, as
``infra.process`` starts every service, gets as much CPU as any other whatever its nice value.
Its autogroup is only changed when the process leads its session, so services that share a
shell's session are not lowered with it.
"""

from __future__ import annotations

import os
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")


def lower_priority(nice: int, *, autogroup: Path = AUTOGROUP) -> list[str]:
    """Raise this process's nice value by ``nice`` (0: leave it); what was changed, for the log.
    Call it before the process starts its threads. Not being allowed to is not an error."""
    if nice <= 0:
        return []
    done = [f"nice {os.nice(nice)}"]
    if os.getsid(0) == os.getpid() and autogroup.exists():
        try:
            autogroup.write_text(str(min(19, nice)))
            done.append(autogroup.read_text().strip().replace("/autogroup-", "autogroup "))
        except OSError as exc:
            done.append(f"autogroup unchanged ({exc.strerror})")
    return done
