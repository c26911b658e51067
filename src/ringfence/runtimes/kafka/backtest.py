"""Back-tests in the kafka runtime: the events topic's newest records, replayed in the bounded
child process of :mod:`ringfence.runtimes.backtest` (``python -m ringfence.runtimes.kafka.backtest``).

The api service finds the records (:func:`newest`): those ingest wrote after the time a
bisection of the partitions' record times finds, about ``limit`` of them (offsets are
counted, transaction markers among them). The child reads them with one consumer
(:func:`.ranges.read_merged`): each partition in its order, the partitions merged by record
time, so a customer's events (one partition) are replayed exactly in the order the workers
processed them.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ringfence.runtimes.backtest import BacktestJob, KafkaSource, Rows, main
from ringfence.runtimes.kafka.ranges import READER_CONFIG, Range, read_merged

TIMEOUT_S = 10.0
LATEST_MS = 1 << 62  # above any record time, whatever the clocks of the hosts that wrote them


def newest(consumer: Any, topic: str, partitions: int, limit: int) -> tuple[list[Range], int]:
    """The ranges holding the newest ``limit`` offsets of ``topic``, and how many of their
    oldest to skip: records of one transaction share their time, so the bisection finds
    whole transactions, and the one it cuts is skipped into."""
    from confluent_kafka import TopicPartition

    marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), TIMEOUT_S) for p in range(partitions)]
    if sum(high - low for low, high in marks) <= limit:
        return [(p, low, high) for p, (low, high) in enumerate(marks)], 0

    def starts(at_ms: int) -> list[int]:
        found = consumer.offsets_for_times([TopicPartition(topic, p, at_ms) for p in range(partitions)], TIMEOUT_S)
        return [
            high if tp.offset < 0 else min(high, max(low, tp.offset))
            for tp, (low, high) in zip(found, marks, strict=True)
        ]

    def count(first: list[int]) -> int:
        return sum(high - start for start, (_, high) in zip(first, marks, strict=True))

    early, late = 0, LATEST_MS
    while early < late:  # the earliest time after which at most ``limit`` offsets were written
        middle = (early + late) // 2
        if count(starts(middle)) > limit:
            early = middle + 1
        else:
            late = middle
    first = starts(late)
    if count(first) < limit and late > 0:  # take the transaction before too, and skip into it
        wider = starts(late - 1)
        first, skip = wider, count(wider) - limit
    else:
        skip = 0
    return [(p, start, high) for p, (start, (_, high)) in enumerate(zip(first, marks, strict=True))], skip


def kafka_rows(job: BacktestJob) -> tuple[int, Rows]:
    """The child's events: ``job.kafka``'s ranges, merged, the surplus oldest skipped."""
    if job.kafka is None:
        raise ValueError("a kafka back-test needs its source")
    source = job.kafka
    total = sum(end - start for _, start, end in source.ranges) - source.skip
    # a read the brokers hold up ends with the budget: the run then says it was truncated
    return min(job.limit, max(0, total)), _rows(source, time.monotonic() + job.budget_s)


def _rows(source: KafkaSource, deadline: float) -> Rows:
    from confluent_kafka import Consumer

    consumer = Consumer({**source.config, **READER_CONFIG})
    try:
        for index, message in enumerate(read_merged(consumer, source.topic, source.ranges, deadline)):
            if index >= source.skip:
                partition, offset = int(message.partition() or 0), int(message.offset() or 0)
                at = message.timestamp()[1] / 1000.0
                yield partition << source.offset_bits | offset, partition, at, message.value() or b""
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main(kafka_rows))
