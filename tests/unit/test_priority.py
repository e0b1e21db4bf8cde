"""A background service lowers its own CPU priority: nice value and, leading its session, its
autogroup's (the scheduler's unit between sessions)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from infra.priority import AUTOGROUP, lower_priority

PROBE = """
import json, os, sys
from pathlib import Path
from infra.priority import lower_priority
done = lower_priority(7, autogroup=Path(sys.argv[1]))
print(json.dumps({"done": done, "nice": os.getpriority(os.PRIO_PROCESS, 0)}))
"""


def run_probe(new_session: bool, autogroup: Path) -> dict[str, object]:
    """``lower_priority(7)`` in a child process; what it reported and its nice value."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(autogroup)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        start_new_session=new_session,
        cwd=Path(__file__).resolve().parents[2],
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_zero_changes_nothing() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    assert lower_priority(0) == []
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_a_session_leader_lowers_its_nice_value_and_its_own_autogroup(tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    result = run_probe(new_session=True, autogroup=group)
    assert result["nice"] == min(19, base + 7)
    assert [str(d) for d in result["done"]] == [f"nice {result['nice']}", "7"]  # type: ignore[attr-defined]
    assert group.read_text() == "7"  # what the kernel is told; it answers with the line below


def test_this_kernel_has_autogroups_and_a_new_session_gets_its_own_at_nice_7() -> None:
    """The real /proc/self/autogroup. The services run on Linux kernels with
    CONFIG_SCHED_AUTOGROUP; one without it fails here rather than passing on a different check."""
    assert AUTOGROUP.exists(), "this kernel has no autogroups (/proc/self/autogroup is missing)"
    done = [str(d) for d in run_probe(new_session=True, autogroup=AUTOGROUP)["done"]]  # type: ignore[attr-defined]
    assert len(done) == 2, done
    assert re.fullmatch(r"autogroup \d+ nice 7", done[1]), done


def test_without_autogroups_only_the_nice_value_changes(tmp_path: Path) -> None:
    result = run_probe(new_session=True, autogroup=tmp_path / "no-autogroup")
    assert [str(d) for d in result["done"]] == [f"nice {result['nice']}"]  # type: ignore[attr-defined]


def test_a_process_in_a_shared_session_leaves_the_autogroup_alone(tmp_path: Path) -> None:
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    result = run_probe(new_session=False, autogroup=group)
    assert [str(d) for d in result["done"]] == [f"nice {result['nice']}"]  # type: ignore[attr-defined]
    assert group.read_text() == "/autogroup-1 nice 0\n"
