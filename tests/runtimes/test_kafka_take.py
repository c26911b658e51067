"""How the kafka runtime's services take records: at once when some are there, not after the wait;
a worker's take gathers what arrives until its commit interval has passed, unless it is full, and
drops what it held of the partitions a rebalance moved meanwhile."""

from __future__ import annotations

import time
from typing import Any

from ringfence.runtimes.kafka.topics import gather, take


class Consumer:
    """librdkafka's consume(n, t) as it behaves: up to n records; waits t only when it has fewer."""

    def __init__(self, fetched: list[str], arriving: list[str]) -> None:
        self.fetched, self.arriving = fetched, arriving
        self.waited = 0.0

    def consume(self, limit: int, timeout: float) -> list[Any]:
        if len(self.fetched) < limit and timeout > 0:  # waits for more, the whole timeout
            self.waited += timeout
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


class Message:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def __repr__(self) -> str:
        topic, partition, offset = self._where
        return f"{topic}[{partition}]@{offset}"


def test_a_gather_holds_what_arrives_until_its_time() -> None:
    consumer = Consumer(["a"], ["b", "c"])
    started = time.monotonic()
    assert gather(consumer, take(consumer, 100, 0.1), 100, started + 0.05, set()) == ["a", "b", "c"]
    assert time.monotonic() - started >= 0.05  # not committed sooner than the interval
    assert consumer.waited > 0.04  # in consume calls, as librdkafka waits


def test_a_full_take_is_not_held() -> None:
    consumer = Consumer(["a", "b"], ["c"])
    assert gather(consumer, take(consumer, 2, 0.1), 2, time.monotonic() + 10, set()) == ["a", "b"]
    assert consumer.waited == 0.0


def test_after_a_quiet_spell_the_first_records_are_not_held() -> None:
    consumer = Consumer(["a"], ["b"])
    assert gather(consumer, take(consumer, 100, 0.1), 100, time.monotonic() - 1, set()) == ["a"]
    assert consumer.waited == 0.0


def test_nothing_taken_is_not_held_either() -> None:
    consumer = Consumer([], [])
    assert gather(consumer, take(consumer, 100, 0.1), 100, time.monotonic() + 10, set()) == []
    assert consumer.waited == 0.1  # take's own wait, not the gather's


def test_a_rebalance_during_a_gather_drops_what_was_taken_of_the_partitions_it_moved() -> None:
    """Those records are fetched again from the committed offset by their next owner (this worker,
    if it gets them back): kept, they would run twice."""
    a0, b0, a0_again, b1 = Message("a", 0, 7), Message("b", 0, 3), Message("a", 0, 7), Message("b", 0, 4)
    moved: set[tuple[str, int]] = set()

    class Rebalancing(Consumer):
        def consume(self, limit: int, timeout: float) -> list[Any]:
            if timeout > 0:
                moved.add(("a", 0))  # the revoke callback, served inside this call
            return super().consume(limit, timeout)

    consumer = Rebalancing([a0, b0], [a0_again, b1])
    taken = gather(consumer, take(consumer, 100, 0.1), 100, time.monotonic() + 0.02, moved)
    assert taken == [b0, a0_again, b1]


def test_a_rebalance_served_beside_the_first_record_drops_it_and_keeps_what_that_call_fetched() -> None:
    """The first record of a take is polled before the call that takes those beside it; a revoke
    served in that call (the partition assigned straight back) makes it stale: its next owner
    fetches it again from the committed offset. What the call returns is fresh (librdkafka drops
    what it fetched before a rebalance in the call that serves it)."""
    a0, b0, a0_again = Message("a", 0, 7), Message("b", 0, 3), Message("a", 0, 7)
    moved: set[tuple[str, int]] = set()

    class RebalancingBeside(Consumer):
        def consume(self, limit: int, timeout: float) -> list[Any]:
            if self.fetched == [b0]:  # the call beside the polled record
                moved.add(("a", 0))
                self.fetched = [b0, a0_again]
            return super().consume(limit, timeout)

    consumer = RebalancingBeside([], [a0, b0])
    assert take(consumer, 100, 0.1, moved) == [b0, a0_again]


def test_a_rebalance_served_in_the_poll_keeps_the_record_it_returns() -> None:
    """The poll that served the revoke fetched its record afresh: dropping it would lose it (the
    consumer's position is past it already, and the commit would move past it unprocessed)."""
    fresh, b0 = Message("a", 0, 7), Message("b", 0, 3)
    moved: set[tuple[str, int]] = set()

    class RebalancingInPoll(Consumer):
        def poll(self, timeout: float) -> Any:
            moved.add(("a", 0))  # revoked and assigned back, served inside this poll
            return super().poll(timeout)

    consumer = RebalancingInPoll([], [fresh, b0])
    taken = gather(consumer, take(consumer, 100, 0.1, moved), 100, time.monotonic() + 0.02, moved)
    assert taken == [fresh, b0]
