"""The api service's feature queries to the process workers (:mod:`ringfence.runtimes.kafka.queries`):
each asker holds one of the API's threads while it waits for an answer, so only a few wait at
once; a flood of queries no worker answers (a rebalance, a restore) is turned away at once
instead of taking every thread from every other request for 5 s each."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ringfence.errors import RequestError
from ringfence.runtimes.kafka import queries
from ringfence.runtimes.kafka.topics import Topics


class SilentProducer:
    """Sends every query; no worker ever answers one."""

    def __init__(self) -> None:
        self.sent = 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.sent += 1

    def flush(self, timeout: float) -> int:
        return 0


def client() -> queries.FeatureClient:
    asker = object.__new__(queries.FeatureClient)  # no broker: what asking uses
    asker.topics = Topics("t", 4)
    asker.producer = SilentProducer()
    asker._for_askers()
    return asker


@pytest.mark.serial  # 0.5 s
def test_only_a_few_queries_wait_for_the_workers_at_once_the_next_is_turned_away() -> None:
    asker = client()
    outcomes: list[str] = []

    def ask(customer: str) -> None:
        try:
            asker.ask(customer, timeout_s=2.0)
        except RequestError as error:
            outcomes.append(str(error))

    waiting = [threading.Thread(target=ask, args=(f"c{i}",)) for i in range(queries.MAX_ASKING)]
    for thread in waiting:
        thread.start()
    deadline = time.monotonic() + 2
    while asker.producer.sent < queries.MAX_ASKING and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)

    began = time.monotonic()
    with pytest.raises(RequestError, match="waiting for the workers already") as refused:
        asker.ask("one-more", timeout_s=2.0)
    assert time.monotonic() - began < 0.5
    assert refused.value.status == 503
    for thread in waiting:
        thread.join(5)
    assert len(outcomes) == queries.MAX_ASKING  # each waited its time, and was answered 503
    assert all("did not answer" in o for o in outcomes)
    with pytest.raises(RequestError, match="did not answer"):  # a place is free again
        asker.ask("after", timeout_s=0.1)
