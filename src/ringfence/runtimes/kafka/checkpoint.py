"""Checkpointing: a batch is one Kafka transaction. The records it sends on (alerts, late
events, contributions to the join), the changelog records of the state it changed and the
input offsets past its records commit together or not at all, so a worker that dies
mid-batch leaves nothing visible to ``read_committed`` readers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ringfence.runtimes.kafka.task import Source

TIMEOUT_S = 30


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
                self.producer.abort_transaction(TIMEOUT_S)
            raise

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
    """True if the transaction ``error`` left open can be aborted (and the batch redone); a
    fatal error (a fenced producer) or one needing no abort cannot."""
    if not is_kafka(error):
        return True
    kafka_error = error.args[0]
    return bool(kafka_error.txn_requires_abort()) and not kafka_error.fatal()
