"""Reading the committed records of partitions between offsets, as far as they can be read now.

Used where the api service reads the events topic back (a customer's recent events) and by
back-tests. A range ends at its end offset, or sooner at what a ``read_committed`` reader can
read now (the partition's end, a transaction still open), which librdkafka says with a
partition-EOF event; an offset retention removed is skipped to the partition's start. Any
other error, or brokers that answer nothing for :data:`IDLE_S`, raises :class:`ReadFailed`:
an empty answer always means there was nothing to read.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from ringfence.runtimes.kafka.topics import take

IDLE_S = 30.0
BUFFERED = 2_000  # records held per partition while merging; past it the partition is paused
# what a range reader's consumer needs on top of the client's settings
READER_CONFIG = {
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",  # an offset retention removed: go on from the start
    "fetch.wait.max.ms": 10,  # the end is what it waits for: do not let the broker hold fetches
    "queued.max.messages.kbytes": 4096,  # fetched ahead per partition (librdkafka's default: 64 MiB)
}

Range = tuple[int, int, int]  # (partition, start, end)


class ReadFailed(RuntimeError):
    """A range could not be read: the brokers' error, or their silence."""


def read_merged(consumer: Any, topic: str, ranges: list[Range], deadline: float = math.inf) -> Iterator[Any]:
    """The committed records of ``ranges`` of ``topic``, each partition in its order, the
    partitions merged by record time (ties: partition, then offset). One consumer for all of
    them; a partition whose buffer is full is paused until the merge drains it, one that is
    done is paused for good. Stops quietly at ``deadline`` (monotonic): the caller, who set
    it, says what was left unread."""
    from confluent_kafka import KafkaError, TopicPartition

    ends = {p: end for p, start, end in ranges if end > start}
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, start) for p, start, end in ranges if p in ends])
    buffers: dict[int, deque[Any]] = {p: deque() for p in ends}
    reading, paused = set(ends), set[int]()

    def pause(partitions: set[int]) -> None:
        if partitions - paused:
            consumer.pause([TopicPartition(topic, p) for p in sorted(partitions - paused)])
            paused.update(partitions)

    heard = time.monotonic()
    try:
        while reading or any(buffers.values()):
            while any(p in reading and not buffers[p] for p in ends):  # every partition's next record is known
                now = time.monotonic()
                if now >= deadline:
                    return
                if now - heard > IDLE_S:
                    raise ReadFailed(f"the brokers sent nothing of {topic} for {IDLE_S:.0f} s")
                for message in take(consumer, 1000, min(0.1, deadline - now)):
                    error = message.error()
                    if message.partition() is None:  # the consumer's, not a partition's (the group's rights, say)
                        if error is not None and (error.fatal() or not error.retriable()):
                            raise ReadFailed(f"reading {topic}: {error.str()}")
                        continue
                    p = int(message.partition())
                    if p not in reading:
                        continue  # done with: what arrives past its end is not wanted
                    heard = time.monotonic()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise ReadFailed(f"reading {topic}[{p}]: {error.str()}")
                        reading.discard(p)  # all that can be read now
                    elif int(message.offset() or 0) >= ends[p]:
                        reading.discard(p)
                    else:
                        buffers[p].append(message)
                pause({p for p in ends if p not in reading or len(buffers[p]) >= BUFFERED})
            ready = [p for p in ends if buffers[p]]
            if not ready:
                continue
            p = min(ready, key=lambda q: (buffers[q][0].timestamp()[1], q, buffers[q][0].offset()))
            yield buffers[p].popleft()
            if p in paused and p in reading and len(buffers[p]) < BUFFERED // 2:
                consumer.resume([TopicPartition(topic, p)])
                paused.discard(p)
    finally:
        if paused:  # librdkafka keeps a pause through unassign: the consumer's next read would stall
            consumer.resume([TopicPartition(topic, p) for p in sorted(paused)])
        consumer.unassign()
