"""Two dispatch services and one partition: one paused past its session loses the partition
with a batch in hand, and the other applies it. The first, woken, must not apply it again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ringfence.alerts.model import AlertQuery
from ringfence.config import Settings
from ringfence.errors import StaleBatch
from ringfence.runtimes.kafka import records
from ringfence.runtimes.kafka.dispatch import DispatchService, checkpoint_name
from ringfence.store import Checkpoint, SqliteStore
from ringfence.testing import FixedClock
from tests.helpers.dispatching import dispatcher, webhook_config
from tests.helpers.store import signal

TOPIC = "rf.alerts"


@dataclass
class Message:
    """A consumed record, as confluent-kafka's Message answers."""

    at: int
    value_: bytes

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.at

    def value(self) -> bytes:
        return self.value_


def hits(first: int, last: int) -> list[Message]:
    return [Message(i, records.encode(records.AlertRecord(signal=signal(i)))) for i in range(first, last + 1)]


class Consumer:
    """What ``apply`` asks of its consumer: where to read on, and the offsets for lag."""

    def __init__(self) -> None:
        self.sought: list[Any] = []

    def seek(self, partition: Any) -> None:
        self.sought.append(partition)

    def commit(self, **kwargs: Any) -> None:
        pass


def service(store: SqliteStore) -> DispatchService:
    config = webhook_config("http://127.0.0.1:9")  # never sent to: nothing steps the pipeline
    settings = Settings(kafka_bootstrap="127.0.0.1:9")
    made = DispatchService(settings, store, dispatcher(store, FixedClock(1000.0), config))
    made.consumer.close()  # nothing is consumed here: the batches come by hand
    made.consumer = Consumer()
    return made


def test_a_batch_another_service_applied_is_not_applied_again(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    paused, owner = service(store), service(store)
    owner.apply(hits(0, 9))  # the new owner applied the batch the paused one still holds

    paused.apply(hits(0, 9))
    (alert,), _ = store.list_alerts(AlertQuery())
    assert alert.count == 10  # once
    assert store.load_checkpoint(checkpoint_name(TOPIC, 0))[0] == 10  # never moved back
    assert [(tp.partition, tp.offset) for tp in paused.consumer.sought] == [(0, 10)]  # read on, if held

    owner.apply(hits(10, 11))
    (alert,), _ = store.list_alerts(AlertQuery())
    assert alert.count == 12


def test_the_store_refuses_a_batch_behind_its_offset_and_writes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    store.commit_batch([signal(1)], Checkpoint("dispatch:t:0", 5, after=0), 1000.0)
    with pytest.raises(StaleBatch, match="at offset 5 already"):
        store.commit_batch([signal(2)], Checkpoint("dispatch:t:0", 6, after=3), 1001.0)
    (alert,), _ = store.list_alerts(AlertQuery())
    assert alert.count == 1
    store.commit_batch([signal(3)], Checkpoint("dispatch:t:0", 9, after=7), 1002.0)  # a gap: offsets of markers
    assert store.load_checkpoint("dispatch:t:0")[0] == 9
