"""The kafka runtime's ingest thread outlives a batch that fails unexpectedly (issue 15, item 2):
that batch's requests are answered 503 and the next requests are served."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from typing import Any

import pytest

from ringfence.errors import OverloadedError
from ringfence.events import validate_event
from ringfence.runtimes.kafka import ingest as kafka_ingest
from ringfence.testing import event


class FakeAppender(kafka_ingest.KafkaAppender):
    """The real thread loop over a stand-in producer: the first commit raises, later ones succeed."""

    def __init__(self) -> None:  # no broker: only what the loop uses
        self._requests = queue.Queue()
        self._stop = threading.Event()
        self.producers_made = 0
        self._producer = None
        self.commits = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _new_producer(self) -> Any:
        self.producers_made += 1
        return object()

    def _commit(self, batch: list[Any]) -> None:
        self.commits += 1
        if self.commits == 1:
            raise TypeError("a bug in routing one event")
        for events, future, loop in batch:
            loop.call_soon_threadsafe(kafka_ingest._succeed, future, list(range(len(events))))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_an_unexpected_failure_fails_its_batch_and_the_thread_serves_the_next() -> None:
    appender = FakeAppender()
    one = [validate_event(json.dumps(event()).encode(), 2e9)]

    async def scenario() -> list[int | None]:
        with pytest.raises(OverloadedError, match="internal error"):
            await asyncio.wait_for(appender.append(one), 5)
        return await asyncio.wait_for(appender.append(one), 5)

    try:
        assert asyncio.run(scenario()) == [0]
        assert appender.producers_made == 1  # the failed transaction's producer was replaced
    finally:
        appender.close()
