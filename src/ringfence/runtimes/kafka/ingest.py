"""``ringfence serve ingest``'s way into the log: an idempotent producer to the events topic.

An event is acknowledged (202) only once the broker acknowledged it to every in-sync replica
(``acks=all``); the idempotent producer keeps retries from writing it twice, and keeps each
partition in the order sent. A producer's retried *request* (same ``event_id``) is not
known here: the process workers drop it (see :mod:`.worker`) and count it in
``ringfence_events_duplicate``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ringfence.config import Settings
from ringfence.errors import OverloadedError
from ringfence.events.model import Event, encode_event
from ringfence.runtimes.kafka.topics import client_config, topics_of

DELIVERY_TIMEOUT_MS = 30_000


class KafkaAppender:
    """Appends events to the events topic, keyed by customer; thread-safe, asyncio-friendly."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Producer

        self.topic = topics_of(settings).events
        self.producer = Producer(
            client_config(
                settings,
                **{
                    "client.id": "ringfence-ingest",
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 2,
                    "compression.type": "lz4",
                    "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
                    "partitioner": "murmur2_random",
                },
            )
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)  # runs the delivery callbacks

    async def append(self, events: list[Event]) -> list[int | None]:
        """Produce ``events``; return their offsets once all are acknowledged. Raises
        OverloadedError (503, retry) if the broker does not take them."""
        from confluent_kafka import KafkaException

        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []
        for event in events:
            future: asyncio.Future[int] = loop.create_future()

            def delivered(err: Any, msg: Any, future: asyncio.Future[int] = future) -> None:
                loop.call_soon_threadsafe(_settle, future, err, msg)

            key = (event.customer_id or str(event.data.get("service") or "")).encode()
            try:
                self.producer.produce(
                    self.topic,
                    encode_event(event),
                    key,
                    on_delivery=delivered,
                    timestamp=int(time.time() * 1000),  # the record's time: when ingest accepted it
                )
            except (BufferError, KafkaException) as exc:
                future.set_exception(OverloadedError(f"the event log is not taking events now: {exc}", 1))
            futures.append(future)
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            # some events of the request may be in the log: a retry is safe, the workers drop duplicates
            raise failed if isinstance(failed, OverloadedError) else OverloadedError(str(failed), 1)
        return [r for r in results if isinstance(r, int)]

    def close(self) -> None:
        self.producer.flush(10)
        self._stop.set()
        self._poller.join(timeout=5)


def _settle(future: asyncio.Future[int], err: Any, msg: Any) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(OverloadedError(f"the event log did not acknowledge an event: {err.str()}", 1))
    else:
        future.set_result(int(msg.offset()))
