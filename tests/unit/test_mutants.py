"""``make mutants`` stays runnable: every injected bug still applies to the tree as it is, and a
mutant is always undone (the runner's ``applied`` restores the file, on an error too)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.mutants import MUTANTS, Mutant, MutantError, applied, check_applicable


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_mutant_applies_to_the_tree_once_and_changes_it(mutant: Mutant) -> None:
    root = Path(__file__).resolve().parents[2]
    source = (root / mutant.path).read_text()
    assert source.count(mutant.old) == 1, f"{mutant.name}: move the mutant with the code it breaks"
    assert mutant.old != mutant.new
    assert all(not t.startswith("-") or t == "-k" for t in mutant.tests)


def _repo(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m.py").write_text(text)
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    for cmd in (["init", "-q"], ["add", "m.py"], ["commit", "-q", "-m", "x"]):
        subprocess.run([*git, *cmd], cwd=tmp_path, check=True)
    return tmp_path


def test_a_mutant_is_undone_even_when_its_run_fails(tmp_path: Path) -> None:
    root = _repo(tmp_path, "a = 1\nb = 2\n")
    m = Mutant("t", "test", "m.py", "b = 2\n", "b = 3\n", ("x",))
    seen = []

    def crashing_run() -> None:
        with applied(m, root):
            seen.append((root / "m.py").read_text())
            raise RuntimeError("the tests crashed")

    with pytest.raises(RuntimeError):
        crashing_run()
    assert seen == ["a = 1\nb = 3\n"]
    assert (root / "m.py").read_text() == "a = 1\nb = 2\n"


def test_a_mutant_refuses_a_file_with_uncommitted_changes_or_a_moved_text(tmp_path: Path) -> None:
    root = _repo(tmp_path, "a = 1\n")
    with pytest.raises(MutantError, match="occurs 0 times"):
        check_applicable(Mutant("t", "test", "m.py", "b = 2\n", "b = 3\n", ("x",)), root)
    (root / "m.py").write_text("a = 1\nb = 2\n")
    with pytest.raises(MutantError, match="uncommitted"):
        check_applicable(Mutant("t", "test", "m.py", "b = 2\n", "b = 3\n", ("x",)), root)
    assert (root / "m.py").read_text() == "a = 1\nb = 2\n"
