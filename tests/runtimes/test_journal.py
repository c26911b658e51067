"""The SQLite journal: durable appends with increasing offsets, duplicates reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.errors import StoreError
from ringfence.events import decode_event
from ringfence.log import partition_for
from ringfence.runtimes.embedded.journal import SqliteLog
from tests.helpers.factories import ev


def test_appends_get_increasing_offsets_and_read_back_in_order(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=4)
    events = [ev(customer_id=f"c{i}") for i in range(5)]
    offsets = log.append(events, ingested_at=1.0)
    assert offsets == [1, 2, 3, 4, 5]
    records = log.read(after=2, limit=10)
    assert [r.offset for r in records] == [3, 4, 5]
    assert [decode_event(r.body).event_id for r in records] == [e.event_id for e in events[2:]]
    assert log.head() == 5


def test_a_retried_event_is_reported_as_duplicate_and_not_stored_again(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=4)
    first = ev(event_id="e-1")
    assert log.append([first], 1.0) == [1]
    assert log.append([ev(event_id="e-1"), ev(event_id="e-2")], 2.0) == [None, 2]  # no gap
    assert log.count() == 2
    assert log.head() == 2


def test_an_event_sent_twice_in_one_batch_is_stored_once(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=4)
    assert log.append([ev(event_id="e-1"), ev(event_id="e-2"), ev(event_id="e-1")], 1.0) == [1, 2, None]
    assert log.append([ev(event_id="e-3")], 1.0) == [3]
    assert [decode_event(r.body).event_id for r in log.read(0, 10)] == ["e-1", "e-2", "e-3"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.tuples(st.sampled_from(["web", "core"]), st.integers(0, 12)), max_size=8), max_size=6))
def test_offsets_stay_dense_and_each_event_is_stored_once_whatever_the_duplicates(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[str, int]]]
) -> None:
    """Batches with no duplicate take one statement, others one per event: the journal
    must be the same either way, as a model of it says."""
    log = SqliteLog(tmp_path_factory.mktemp("j") / "j.db", partitions=4)
    stored: list[tuple[str, str]] = []
    for batch in batches:
        events = [ev(source=source, event_id=f"e-{n}") for source, n in batch]
        expected: list[int | None] = []
        for event in events:
            key = (event.source, event.event_id)
            expected.append(None if key in stored else len(stored) + 1)
            if key not in stored:
                stored.append(key)
        assert log.append(events, 1.0) == expected
    assert log.head() == len(stored)
    assert [(r.offset, decode_event(r.body).source, decode_event(r.body).event_id) for r in log.read(0, 100)] == [
        (i + 1, *key) for i, key in enumerate(stored)
    ]


def test_the_same_event_id_from_another_producer_is_not_a_duplicate(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=4)
    assert log.append([ev(event_id="e-1", source="web"), ev(event_id="e-1", source="mobile-app")], 1.0) == [1, 2]


def test_events_survive_reopening_the_file(tmp_path: Path) -> None:
    SqliteLog(tmp_path / "j.db", partitions=4).append([ev(), ev()], 1.0)
    assert SqliteLog(tmp_path / "j.db", partitions=4).head() == 2


def test_opening_with_another_partition_count_is_refused(tmp_path: Path) -> None:
    SqliteLog(tmp_path / "j.db", partitions=4)
    with pytest.raises(StoreError, match="created with 4 partitions"):
        SqliteLog(tmp_path / "j.db", partitions=8)


def test_one_customer_always_maps_to_one_partition() -> None:
    parts = {partition_for(ev(customer_id="cus_42"), 8) for _ in range(5)}
    assert len(parts) == 1


def test_retention_deletes_only_old_processed_events_and_offsets_are_never_reused(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2)
    log.append([ev(), ev()], ingested_at=100.0)
    log.append([ev()], ingested_at=200.0)
    assert log.delete_older_than(ingested_before=150.0, processed_up_to=1, max_rows=10) == 1  # 2 not processed
    assert [r.offset for r in log.read(0, 10)] == [2, 3]
    assert log.delete_older_than(ingested_before=1000.0, processed_up_to=3, max_rows=10) == 2
    assert log.append([ev()], 300.0) == [4]
