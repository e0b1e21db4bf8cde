"""Faust's aiokafka transport with the session app's fetch settings.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` and aiokafka's default
``fetch_min_bytes=1``, and has no setting for either: every fetch returns as soon as one record is
there, so at a few hundred tokens a second the app (and the broker) handled a fetch request per
token. The session state is not on a client's path (a new device hydrates from a snapshot and the
gateway splices the log after its cursor), so the app asks the broker to wait for a fuller fetch:
``fetch_min_bytes``, or ``fetch_max_wait_ms`` at most.
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


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

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            made: faust_aiokafka.AIOKafkaConsumerThread = thread(self, loop=self.loop, beacon=self.beacon)
            return made

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport(app.conf.broker_consumer, app)
