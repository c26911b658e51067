"""Reading partitions' committed records between offsets (the kafka runtime's back-tests and
its search for a customer's events), against a consumer that behaves as librdkafka's does:
transaction markers take offsets and are never delivered, the end of what can be read comes
as a partition-EOF event, errors come as messages."""

from __future__ import annotations

import time

import pytest

from ringfence.runtimes.kafka import ranges
from ringfence.runtimes.kafka.backtest import newest
from ringfence.runtimes.kafka.ranges import ReadFailed, read_merged
from tests.helpers.fake_kafka import Consumer, Denied, Message


def offsets(messages: list[Message]) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for m in messages]


def test_partitions_are_merged_by_record_time_each_in_its_order_past_markers() -> None:
    # ingest's transactions: records of one share their time; a marker after each
    consumer = Consumer({0: [(0, 10), (1, 10), (3, 30)], 1: [(0, 20), (2, 20), (3, 40)]})
    read = list(read_merged(consumer, "events", [(0, 0, 5), (1, 0, 5)]))
    assert offsets(read) == [(0, 0), (0, 1), (1, 0), (1, 2), (0, 3), (1, 3)]


def test_a_range_ends_at_its_end_offset_or_at_what_can_be_read_now() -> None:
    consumer = Consumer({0: [(0, 1), (1, 2), (2, 3), (3, 4)], 1: [(5, 1)]})
    read = list(read_merged(consumer, "events", [(0, 1, 3), (1, 5, 50), (2, 7, 7)]))
    assert offsets(read) == [(1, 5), (0, 1), (0, 2)]
    assert consumer.positions == {}  # unassigned


def test_an_error_of_the_brokers_is_raised_not_taken_for_the_end() -> None:
    consumer = Consumer({0: [(0, 1)], 1: [(0, 2)]}, fail=1)
    with pytest.raises(ReadFailed, match="not authorised"):
        list(read_merged(consumer, "events", [(0, 0, 1), (1, 0, 1)]))


def test_silent_brokers_are_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    class Silent(Consumer):
        def consume(self, limit: int, timeout: float) -> list[Message]:
            return []

    monkeypatch.setattr(ranges, "IDLE_S", 0.0)
    with pytest.raises(ReadFailed, match="sent nothing"):
        list(read_merged(Silent({0: [(0, 1)]}), "events", [(0, 0, 1)]))


def test_a_partition_far_ahead_is_paused_while_the_others_catch_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranges, "BUFFERED", 4)
    early = [(o, 100 + o) for o in range(40)]  # partition 0's records are all newer than partition 1's
    consumer = Consumer({0: early, 1: [(o, o) for o in range(30)]})
    read = list(read_merged(consumer, "events", [(0, 0, 100), (1, 0, 100)]))
    assert [m.timestamp()[1] for m in read] == sorted(m.timestamp()[1] for m in read)
    assert len(read) == 70
    assert consumer.pauses > 0


def test_the_newest_records_are_found_by_their_time_and_a_cut_transaction_is_skipped_into() -> None:
    # partition 0: transactions at t=10 (offsets 0-3) and t=30 (5-8); partition 1: t=20 (0-5)
    consumer = Consumer(
        {0: [(o, 10) for o in range(4)] + [(o, 30) for o in range(5, 9)], 1: [(o, 20) for o in range(6)]}
    )
    ranges_, skip = newest(consumer, "events", 2, 5)
    # the newest 5 offsets: the t=30 transaction (4 records and its marker) ...
    assert (ranges_, skip) == ([(0, 5, 10), (1, 7, 7)], 0)
    ranges_, skip = newest(consumer, "events", 2, 9)
    # ... and with 9, the t=20 transaction too, of which the oldest 3 of its 7 offsets are skipped
    assert ranges_ == [(0, 5, 10), (1, 0, 7)]
    assert skip == 3
    everything, skip = newest(consumer, "events", 2, 1000)
    assert (everything, skip) == ([(0, 0, 10), (1, 0, 7)], 0)


def test_a_read_left_early_leaves_the_consumer_fit_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranges, "BUFFERED", 4)
    consumer = Consumer({0: [(o, 100 + o) for o in range(40)], 1: [(o, o) for o in range(30)]})
    reader = read_merged(consumer, "events", [(0, 0, 100), (1, 0, 100)])
    assert [next(reader).offset() for _ in range(3)] == [0, 1, 2]
    reader.close()  # partition 0 was paused, its buffer full
    assert consumer.paused == set()
    assert len(list(read_merged(consumer, "events", [(0, 0, 100)]))) == 40


def test_records_past_a_range_do_not_hide_a_partition_the_brokers_stopped_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Stalled(Consumer):  # partition 0 written to all the time; partition 1's leader gone
        def _fetch(self) -> None:
            at = self.positions.get(0)
            if 0 not in self.paused and at is not None:
                self.queue += [Message(0, o, o) for o in range(at, at + 3)]
                self.positions[0] = at + 3

    monkeypatch.setattr(ranges, "IDLE_S", 0.2)
    started = time.monotonic()
    with pytest.raises(ReadFailed, match="sent nothing"):
        list(read_merged(Stalled({0: [], 1: []}), "events", [(0, 0, 3), (1, 0, 1)]))
    assert time.monotonic() - started < 5


def test_an_error_of_the_consumer_itself_is_raised() -> None:
    class Unauthorised(Consumer):
        def consume(self, limit: int, timeout: float) -> list[Message]:
            error = Message(0, 0, error=Denied())
            error.partition = lambda: None  # type: ignore[method-assign]
            return [error]

    with pytest.raises(ReadFailed, match="not authorised"):
        list(read_merged(Unauthorised({0: [(0, 1)]}), "events", [(0, 0, 1)]))


def test_the_deadline_ends_a_read_quietly() -> None:
    consumer = Consumer({0: [(o, o) for o in range(100)]})
    assert list(read_merged(consumer, "events", [(0, 0, 100)], deadline=0.0)) == []
