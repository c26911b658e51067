"""The kafka runtime's counters that one service's processes alone see, added up in a real
PostgreSQL by several publishers at once, and what a publisher does when the store fails."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ringfence.metrics import Metrics
from ringfence.runtimes.kafka import shared_counters
from ringfence.runtimes.kafka.shared_counters import CountersPublisher
from ringfence.store.postgres import PostgresStore
from tests.helpers.servers import PostgresCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgres: PostgresCluster) -> Any:
    store = PostgresStore(postgres.new_database(), pool_size=4)
    store.migrate()
    yield store
    store.close()


def test_processes_add_what_they_counted_each_once(store: PostgresStore) -> None:
    ingest, worker = Metrics(), Metrics()
    publishers = [CountersPublisher(store, ingest), CountersPublisher(store, worker)]
    ingest.events_rejected.inc(3)
    worker.events_duplicate.inc(40)
    worker.events_late.inc(2)
    threads = [threading.Thread(target=p.publish) for p in publishers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in publishers:  # nothing new: nothing written again
        p.publish()
    ingest.events_rejected.inc(2)
    publishers[0].stop()  # the last of it, as it stops
    assert shared_counters.shared_totals(store) == {
        "rejected": 5.0,
        "duplicates": 40.0,
        "late": 2.0,
        "notification_failures": 0.0,
        "fx_missing": 0.0,
    }
    restarted = CountersPublisher(store, Metrics())  # a process started again counts from zero
    restarted.publish()
    assert shared_counters.shared_totals(store)["rejected"] == 5.0


def test_a_store_down_loses_nothing_counted_and_a_stop_does_not_wait_on_it(store: PostgresStore) -> None:
    metrics = Metrics()
    publisher = CountersPublisher(store, metrics)
    metrics.events_rejected.inc(4)
    real_add, calls = publisher._counters.add, []

    def down(counted: Any, at: float) -> None:
        calls.append(dict(counted))
        raise OSError("connection refused")

    publisher._counters.add = down  # type: ignore[method-assign]
    publisher.publish()
    metrics.events_rejected.inc(1)
    publisher.publish()
    assert [c["rejected"] for c in calls] == [4.0, 5.0]  # what failed is tried again, with what came since
    publisher.stop()
    assert len(calls) == 2  # a stop after a failed write does not try once more
    publisher._counters.add = real_add  # type: ignore[method-assign]
    publisher.publish()
    assert shared_counters.shared_totals(store)["rejected"] == 5.0
