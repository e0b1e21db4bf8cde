"""A background service lowers its own CPU priority: nice value and, leading its session, its
autogroup's (the scheduler's unit between sessions)."""

from __future__ import annotations

import json
import os
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


def test_a_session_leader_lowers_its_nice_value_and_its_own_autogroup() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    result = run_probe(new_session=True, autogroup=AUTOGROUP)
    assert result["nice"] == min(19, base + 7)
    done = [str(d) for d in result["done"]]  # type: ignore[attr-defined]
    if AUTOGROUP.exists():  # a kernel with autogroups: the child's new one is at nice 7
        assert done[1].startswith("autogroup ")
        assert done[1].endswith(" nice 7")
    else:
        assert len(done) == 1


def test_a_process_in_a_shared_session_leaves_the_autogroup_alone(tmp_path: Path) -> None:
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-1 nice 0\n")
    result = run_probe(new_session=False, autogroup=group)
    assert [str(d) for d in result["done"]] == [f"nice {result['nice']}"]  # type: ignore[attr-defined]
    assert group.read_text() == "/autogroup-1 nice 0\n"
