"""How the kafka runtime's services take records: at once when some are there, not after the wait;
a worker's take gathers what arrives until its commit interval has passed, unless it is full."""

from __future__ import annotations

import time
from typing import Any

from ringfence.runtimes.kafka.topics import take


class Consumer:
    """librdkafka's consume(n, t) as it behaves: up to n records; waits t only when it has fewer."""

    def __init__(self, fetched: list[str], arriving: list[str]) -> None:
        self.fetched, self.arriving = fetched, arriving
        self.waited = 0.0

    def consume(self, limit: int, timeout: float) -> list[Any]:
        if len(self.fetched) < limit and timeout > 0:  # waits for more, the whole timeout
            self.waited += timeout
            if not self.arriving:
                time.sleep(timeout)
            self.fetched += self.arriving
            self.arriving = []
        taken, self.fetched = self.fetched[:limit], self.fetched[limit:]
        return taken

    def poll(self, timeout: float) -> Any:
        if not self.fetched and not self.arriving:
            self.waited += timeout
            return None
        self.fetched += self.arriving
        self.arriving = []
        return self.fetched.pop(0)


def test_records_already_fetched_are_taken_without_waiting() -> None:
    consumer = Consumer(["a", "b"], ["c"])
    assert take(consumer, 100, 0.1) == ["a", "b"]
    assert consumer.waited == 0.0


def test_with_none_fetched_the_first_to_arrive_is_taken_with_those_beside_it() -> None:
    consumer = Consumer([], ["a", "b", "c"])
    assert take(consumer, 2, 0.1) == ["a", "b"]
    assert consumer.waited == 0.0
    assert take(consumer, 2, 0.1) == ["c"]


def test_nothing_arriving_waits_once() -> None:
    consumer = Consumer([], [])
    assert take(consumer, 100, 0.1) == []
    assert consumer.waited == 0.1


def test_a_gathering_take_holds_what_arrives_until_its_time() -> None:
    consumer = Consumer(["a"], ["b", "c"])
    started = time.monotonic()
    assert take(consumer, 100, 0.1, gather_until=started + 0.05) == ["a", "b", "c"]
    assert time.monotonic() - started >= 0.05  # not committed sooner than the interval
    assert consumer.waited > 0.0


def test_a_full_take_does_not_gather() -> None:
    consumer = Consumer(["a", "b"], ["c"])
    assert take(consumer, 2, 0.1, gather_until=time.monotonic() + 10) == ["a", "b"]
    assert consumer.waited == 0.0


def test_a_take_after_its_time_has_passed_takes_at_once() -> None:
    consumer = Consumer(["a"], ["b"])
    assert take(consumer, 100, 0.1, gather_until=time.monotonic() - 1) == ["a"]
    assert consumer.waited == 0.0
