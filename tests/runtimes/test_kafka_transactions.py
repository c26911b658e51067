"""A worker's transaction when the brokers go away for a while (a pause, a failover): the call
that timed out leaves the transaction open, its abort times out too until the brokers are back,
and the batch is run again from the last commit. Found by a hostile test: a 25 s pause of the
broker ended every process worker."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from ringfence.runtimes.kafka import checkpoint
from ringfence.runtimes.kafka.checkpoint import Transactions, abortable


def timed_out() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to add offsets to transaction", retriable=True))


class Producer:
    def __init__(self, aborts_failing: int, fatal: bool = False) -> None:
        self.aborts_failing = aborts_failing
        self.fatal = fatal
        self.aborts = 0
        self.committed = False

    def begin_transaction(self) -> None:
        pass

    def produce(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        if self.fatal:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
        raise timed_out()

    def abort_transaction(self, timeout: float) -> None:
        self.aborts += 1
        if self.aborts <= self.aborts_failing:
            raise timed_out()

    def commit_transaction(self, timeout: float) -> None:
        self.committed = True


class Consumer:
    def consumer_group_metadata(self) -> object:
        return object()


def test_a_timed_out_commit_is_aborted_once_the_brokers_answer_and_the_batch_redone() -> None:
    producer = Producer(aborts_failing=2)
    with pytest.raises(KafkaException) as failed:
        Transactions(producer, Consumer()).commit([], ["an offset"])
    assert producer.aborts == 3  # two timed out (brokers away), the third went through
    assert not producer.committed
    assert abortable(failed.value)  # the worker rewinds to its last commit and goes on


def test_brokers_away_past_the_patience_end_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "ABORT_PATIENCE_S", 0.0)
    producer = Producer(aborts_failing=10)
    with pytest.raises(KafkaException):
        Transactions(producer, Consumer()).commit([], ["an offset"])
    assert producer.aborts == 1


def test_a_fatal_error_is_not_aborted_nor_redone() -> None:
    producer = Producer(aborts_failing=0, fatal=True)
    with pytest.raises(KafkaException) as failed:
        Transactions(producer, Consumer()).commit([], ["an offset"])
    assert producer.aborts == 0
    assert not abortable(failed.value)
