"""Checkpointing: a batch is one Kafka transaction. The records it sends on (alerts, late
events, contributions to the join), the changelog records of the state it changed and the
input offsets past its records commit together or not at all, so a worker that dies
mid-batch leaves nothing visible to ``read_committed`` readers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ringfence.runtimes.kafka.task import Source

log = logging.getLogger("ringfence.kafka.worker")

TIMEOUT_S = 30
ABORT_PATIENCE_S = 600.0  # brokers away this long: the worker ends (its supervisor starts it again)


class Output(NamedTuple):
    """A record a batch sends."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: by key
    delivered: Callable[[int], None] | None = None  # called with its offset once written


class Transactions:
    """The worker's transactional producer, and its consumer's committed positions."""

    def __init__(self, producer: Any, consumer: Any) -> None:
        self.producer = producer
        self.consumer = consumer

    def commit(self, outputs: Iterable[Output], offsets: list[Any]) -> None:
        """Send ``outputs`` and commit ``offsets`` (TopicPartitions) in one transaction; on a
        failure, abort it (if it can be) and raise."""
        self.producer.begin_transaction()
        try:
            for output in outputs:
                self.produce(*output)
            if offsets:
                metadata = self.consumer.consumer_group_metadata()
                self.producer.send_offsets_to_transaction(offsets, metadata, TIMEOUT_S)
            self.producer.commit_transaction(TIMEOUT_S)
        except Exception as exc:
            if abortable(exc):
                self._abort()
            raise

    def _abort(self) -> None:
        """Abort the open transaction. With the brokers away (a pause, a failover) the abort
        times out too: librdkafka lets it be tried again, and it is, until it goes through or
        :data:`ABORT_PATIENCE_S` passes; the batch is then run again from the last commit."""
        deadline = time.monotonic() + ABORT_PATIENCE_S
        while True:
            try:
                self.producer.abort_transaction(TIMEOUT_S)
                return
            except Exception as exc:
                if not _retriable(exc) or time.monotonic() > deadline:
                    raise
                log.warning("cannot abort the transaction yet (%s); trying again", exc)

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        delivered: Callable[[int], None] | None = None,
    ) -> None:
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        if delivered is not None:
            extra["on_delivery"] = lambda err, msg: delivered(int(msg.offset())) if err is None else None
        while True:
            try:
                self.producer.produce(topic, value, key, **extra)
                return
            except BufferError:  # the producer's queue is full: let it drain
                self.producer.poll(0.1)

    def offsets_past(
        self,
        sources: Iterable[Source],
        done: Mapping[Source, int],
        in_hand: Mapping[Source, int],
        committed: Mapping[Source, int],
    ) -> list[Any]:
        """The offsets (TopicPartitions) to commit for input partitions ``sources``, beyond the
        ``committed`` ones: past the records ``done``, and, for one with no record ``in_hand``
        left undone, past the transaction markers after them too (the consumer's position skips
        those), so a caught-up group shows no lag. Each mapping holds a partition's next offset."""
        from confluent_kafka import TopicPartition

        out = []
        for tp in self.consumer.position([TopicPartition(t, p) for t, p in sources]):
            source = (tp.topic, tp.partition)
            following = done.get(source, -1)
            if following >= in_hand.get(source, -1):
                following = max(following, tp.offset)
            if following >= 0 and following > committed.get(source, -1):
                out.append(TopicPartition(tp.topic, tp.partition, following))
        return out

    def seek_committed(self, sources: Iterable[Source]) -> None:
        """Consume input partitions ``sources`` again from their committed offsets (from the
        start if none was committed yet: the consumer's position is past what it fetched)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        for tp in self.consumer.committed([TopicPartition(t, p) for t, p in sources], TIMEOUT_S):
            self.consumer.seek(tp if tp.offset >= 0 else TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))


def is_kafka(error: BaseException) -> bool:
    from confluent_kafka import KafkaException

    return isinstance(error, KafkaException)


def abortable(error: BaseException) -> bool:
    """True if the transaction ``error`` left open can be aborted (and the batch redone): one
    that requires it, or a call that timed out with the brokers away (retriable: a worker must
    ride out a broker's pause, not end on it); not a fatal error (a fenced producer)."""
    if not is_kafka(error):
        return True
    kafka_error = error.args[0]
    return bool(kafka_error.txn_requires_abort() or kafka_error.retriable()) and not kafka_error.fatal()


def _retriable(error: BaseException) -> bool:
    if not is_kafka(error):
        return False
    kafka_error = error.args[0]
    return bool(kafka_error.retriable()) and not kafka_error.fatal()
