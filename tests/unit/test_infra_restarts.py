"""The restart policy of ``make run``: capped doubling pauses, reset after a stable run, and a
limit on failed starts in a row."""

from __future__ import annotations

import pytest

from infra.restarts import GiveUp, History, Restart, RestartPolicy

POLICY = RestartPolicy(initial_s=0.5, max_s=15.0, stable_s=60.0, quick_exit_s=10.0, max_failed_starts=5)


def _crash_loop(policy: RestartPolicy, up_s: float, times: int) -> list[Restart | GiveUp]:
    """``times`` exits, each ``up_s`` after becoming ready, restarting as told."""
    history, now, decisions = History(), 0.0, []
    for _ in range(times):
        ready_at = now
        now += up_s
        decision, history = policy.after_exit(history, ready_at=ready_at, exited_at=now)
        decisions.append(decision)
        if isinstance(decision, Restart):
            now += decision.delay_s
    return decisions


def test_pauses_double_from_half_a_second_and_stop_growing_at_fifteen() -> None:
    decisions = _crash_loop(POLICY, up_s=30.0, times=8)  # ready, then a crash each 30 s
    assert [d.delay_s for d in decisions if isinstance(d, Restart)] == [0.5, 1, 2, 4, 8, 15, 15, 15]
    assert all(isinstance(d, Restart) and d.failed_starts == 0 for d in decisions)


def test_a_service_that_stayed_up_a_while_is_restarted_after_the_first_pause_again() -> None:
    history = History(failed_starts=0, restarts=6)
    decision, history = POLICY.after_exit(history, ready_at=100.0, exited_at=100.0 + 61)
    assert decision == Restart(0.5, 0)
    assert history == History(failed_starts=0, restarts=1)


def test_five_exits_before_ready_in_a_row_give_up() -> None:
    history, decisions = History(), []
    for i in range(5):
        decision, history = POLICY.after_exit(history, ready_at=None, exited_at=float(i))
        decisions.append(decision)
    assert decisions[:4] == [Restart(0.5, 1), Restart(1, 2), Restart(2, 3), Restart(4, 4)]
    assert decisions[4] == GiveUp(5)


def test_exits_soon_after_ready_count_as_failed_starts() -> None:
    decisions = _crash_loop(POLICY, up_s=9.0, times=5)
    assert isinstance(decisions[-1], GiveUp)
    assert decisions[-1].failed_starts == 5


def test_a_run_past_the_quick_exit_window_clears_the_failed_starts() -> None:
    history = History()
    for exited_at in (1.0, 2.0, 3.0, 4.0):
        _, history = POLICY.after_exit(history, ready_at=None, exited_at=exited_at)
    assert history.failed_starts == 4
    decision, history = POLICY.after_exit(history, ready_at=10.0, exited_at=10.0 + 20)  # up 20 s
    assert isinstance(decision, Restart)
    assert decision.failed_starts == 0
    assert decision.delay_s == 8.0  # but not a stable run: the pause keeps growing
    decision, _ = POLICY.after_exit(history, ready_at=None, exited_at=40.0)
    assert decision == Restart(15.0, 1)


def test_a_long_crash_loop_keeps_the_capped_pause() -> None:
    decisions = _crash_loop(POLICY, up_s=30.0, times=2000)
    assert decisions[-1] == Restart(15.0, 0)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"initial_s": 20.0, "max_s": 15.0}, "initial"),
        ({"quick_exit_s": 90.0, "stable_s": 60.0}, "quick exit"),
        ({"max_failed_starts": 0}, "max_failed_starts"),
    ],
)
def test_inconsistent_policies_are_refused(kwargs: dict[str, float], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]
