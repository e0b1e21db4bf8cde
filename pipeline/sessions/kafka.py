"""Faust's aiokafka transport with the session app's fetch settings.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` and aiokafka's default
``fetch_min_bytes=1``, and has no setting for either: every fetch returns as soon as one record is
there, so at a few hundred tokens a second the app (and the broker) handled a fetch request per
token. The session state is not on a client's path (a new device hydrates from a snapshot and the
gateway splices the log after its cursor), so the app asks the broker to wait for a fuller fetch:
``fetch_min_bytes``, or ``fetch_max_wait_ms`` at most.

Faust's consumer also hands every record to the streams through ``Service.wait_first(callback,
suspend_flow.wait())``, so that a rebalance can abandon a callback blocked on a full stream
queue. That call makes four tasks and an ``asyncio.wait`` per record: 23 µs each on this machine,
a quarter of the app's CPU per token. Almost every callback finishes without suspending (the
queue has room), so the consumer here runs it up to its first suspension first and only a
callback that does suspend goes through ``wait_first``, which sees the same coroutine, resumed.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any, ClassVar

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_min_bytes: ClassVar[int] = 1
    fetch_max_wait_ms: ClassVar[int] = 1500

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher (no public setter).
        consumer._fetch_min_bytes = self.fetch_min_bytes
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


def transport(app: faust.App, *, fetch_min_bytes: int, fetch_max_wait_ms: int) -> Any:
    """A transport for ``app`` (set as ``app.transport`` before the worker starts) whose worker
    consumer fetches with these settings."""
    thread = type(
        "ConsumerThread",
        (_ConsumerThread,),
        {"fetch_min_bytes": fetch_min_bytes, "fetch_max_wait_ms": fetch_max_wait_ms},
    )

    class Consumer(StepFirst, faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            made: faust_aiokafka.AIOKafkaConsumerThread = thread(self, loop=self.loop, beacon=self.beacon)
            return made

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport(app.conf.broker_consumer, app)


class StepFirst(Service):
    """A service whose ``wait_first`` runs a coroutine given first up to its first suspension before
    it makes the tasks of ``Service.wait_first``; one that suspends goes on there, resumed."""

    async def wait_first(
        self,
        *coros: WaitArgT,
        timeout: Seconds | None = None,  # noqa: ASYNC109 - mode's signature, overridden
    ) -> WaitResults:
        first = coros[0] if coros else None
        if not isinstance(first, Coroutine):
            return await super().wait_first(*coros, timeout=timeout)  # type: ignore[arg-type]  # mode: None is its default
        finished, value = run_until_suspended(first)
        if not finished:
            rest = (resumed(first, value), *coros[1:])
            return await super().wait_first(*rest, timeout=timeout)  # type: ignore[arg-type]
        for other in coros[1:]:
            if isinstance(other, Coroutine):
                other.close()  # never started: closing it is all it needs
        if self._stopped.is_set() or self._crashed.is_set():
            return WaitResults([], [], True)  # as Service.wait_first answers once stopped
        return WaitResults([first], [value], False)


def run_until_suspended(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` in the calling task up to its first suspension: ``(True, its result)`` when it
    finished, ``(False, what it yielded to the event loop)`` when it suspended. An exception it
    raises propagates."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, yielded


async def resumed(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """The rest of ``coro``, which suspended yielding ``yielded`` (``run_until_suspended``), as a
    coroutine a task can run: the task gets what ``coro`` yields and ``coro`` what the task sends
    or throws (a cancellation)."""
    return await _resume(coro, yielded)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, which decides
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value
