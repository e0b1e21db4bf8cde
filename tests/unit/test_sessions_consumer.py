"""The session app's consumer runs a record's callback up to its first suspension before it pays
for ``Service.wait_first``: what it finishes, what it resumes, what a cancellation does."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.sessions.kafka import StepFirst, resumed, run_until_suspended


async def finishes(value: int, seen: list[int]) -> int:
    seen.append(value)
    return value * 2


async def suspends(gate: asyncio.Event, seen: list[str]) -> str:
    seen.append("before")
    await gate.wait()
    seen.append("after")
    return "done"


async def test_a_callback_that_does_not_suspend_runs_to_its_result_in_the_calling_task() -> None:
    seen: list[int] = []
    assert run_until_suspended(finishes(21, seen)) == (True, 42)
    assert seen == [21]


async def test_a_callback_that_raises_raises_at_once() -> None:
    async def fails() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        run_until_suspended(fails())


async def test_a_suspended_callback_resumes_in_a_task_where_it_stopped() -> None:
    gate, seen = asyncio.Event(), list[str]()
    coro = suspends(gate, seen)
    finished, yielded = run_until_suspended(coro)
    assert not finished
    assert seen == ["before"]
    task = asyncio.ensure_future(resumed(coro, yielded))
    await asyncio.sleep(0)
    assert not task.done()
    assert seen == ["before"]
    gate.set()
    assert await asyncio.wait_for(task, 5) == "done"
    assert seen == ["before", "after"]


async def test_cancelling_the_resumed_task_cancels_the_callback_where_it_waits() -> None:
    gate = asyncio.Event()
    cleaned: list[str] = []

    async def blocked() -> None:
        try:
            await gate.wait()
        finally:
            cleaned.append("finally")

    coro = blocked()
    _, yielded = run_until_suspended(coro)
    task = asyncio.ensure_future(resumed(coro, yielded))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def test_a_callback_that_suspends_several_times_completes() -> None:
    async def many() -> int:
        total = 0
        for i in range(5):
            await asyncio.sleep(0)
            total += i
        return total

    coro = many()
    _, yielded = run_until_suspended(coro)
    assert await resumed(coro, yielded) == 10


class Waiter(StepFirst):
    """The consumer's ``wait_first`` on a bare service (a real consumer starts a thread)."""


async def test_wait_first_answers_like_mode_with_or_without_a_suspension() -> None:
    service = Waiter()
    suspend = asyncio.Event()

    async def record() -> int:
        return 5

    first = record()
    # The other coroutine is closed, never awaited: filterwarnings=error would fail the test.
    done = await service.wait_first(first, suspend.wait())
    assert (done.done, done.results, done.stopped) == ([first], [5], False)

    gate = asyncio.Event()

    async def blocked() -> int:
        await gate.wait()
        return 7

    asyncio.get_running_loop().call_later(0.05, suspend.set)  # a rebalance suspends the flow
    waiting = suspend.wait()
    done = await asyncio.wait_for(service.wait_first(blocked(), waiting), 5)
    assert (done.done, done.results, done.stopped) == ([waiting], [True], False)

    unblocked = blocked()
    asyncio.get_running_loop().call_later(0.05, gate.set)
    done = await asyncio.wait_for(service.wait_first(unblocked, asyncio.Event().wait()), 5)
    assert done.results == [7]
    assert not done.stopped


async def test_wait_first_answers_stopped_once_the_service_stopped() -> None:
    service = Waiter()
    service._stopped.set()
    done = await service.wait_first(record_once(), asyncio.Event().wait())
    assert (done.done, done.results, done.stopped) == ([], [], True)


async def record_once() -> int:
    return 1
