"""The SQLite journal: durable appends with increasing offsets, duplicates reported; its
segment files rolled by ingest time and dropped whole by retention; a journal written before
segments read as their oldest."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.errors import StoreError
from ringfence.events import decode_event
from ringfence.log import partition_for
from ringfence.runtimes.embedded import journal as journal_module
from ringfence.runtimes.embedded.journal import OPEN_SEGMENTS, SqliteLog
from tests.helpers.factories import ev
from tests.helpers.journal import write_legacy_journal


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


def ids(log: SqliteLog, after: int = 0) -> list[str]:
    return [decode_event(r.body).event_id for r in log.read(after, 1000)]


def files(tmp_path: Path) -> list[str]:
    """The segment files (their -wal and -shm files aside)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("j-") and p.suffix == ".db")


def indexes(tmp_path: Path) -> list[str]:
    """The segments' duplicate indexes (directories)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("j-") and p.suffix == ".dedup")


def sidecars(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir() if p.name.startswith("j-") and p.suffix != ".db"}


def test_a_segment_is_rolled_once_it_has_held_records_for_its_span(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    assert log.append([ev(event_id="a"), ev(event_id="b")], ingested_at=1000.0) == [1, 2]
    assert log.append([ev(event_id="c")], ingested_at=1099.0) == [3]  # still the first segment's span
    assert log.append([ev(event_id="d")], ingested_at=1100.0) == [4]  # a new segment from offset 4
    assert log.append([ev(event_id="e")], ingested_at=1500.0) == [5]  # and from 5
    assert [(s.first, s.opened_at) for s in log.segments()] == [(1, 1000.0), (4, 1100.0), (5, 1500.0)]
    assert files(tmp_path) == ["j-000000000001.db", "j-000000000004.db", "j-000000000005.db"]
    # one journal across them: reads, look-ups, counts and lag as before
    assert ids(log) == ["a", "b", "c", "d", "e"]
    assert ids(log, after=2) == ["c", "d", "e"]
    assert [r.offset for r in log.read(1, 2)] == [2, 3]
    assert log.head() == 5
    assert log.count() == 5
    assert log.count_after(3) == 2
    record = log.get(4)
    assert record is not None
    assert decode_event(record.body).event_id == "d"
    assert log.get(6) is None
    assert sum(log.lag_by_partition(2).values()) == 3
    reopened = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    assert reopened.head() == 5
    assert reopened.append([ev(event_id="f")], ingested_at=1501.0) == [6]  # into the open segment


def test_a_retry_within_a_segment_span_is_a_duplicate_in_the_next_segment_too(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    assert log.append([ev(event_id="a"), ev(event_id="b")], ingested_at=1000.0) == [1, 2]
    # 150 s later: a new segment, and the retry of "a" is found in the one before
    assert log.append([ev(event_id="a"), ev(event_id="c"), ev(event_id="c")], ingested_at=1150.0) == [None, 3, None]
    assert log.append([ev(event_id="b")], ingested_at=1160.0) == [None]
    # two segments on, the first is no longer looked in: the documented window
    assert log.append([ev(event_id="d")], ingested_at=1300.0) == [4]
    assert log.append([ev(event_id="a"), ev(event_id="c")], ingested_at=1301.0) == [5, None]
    assert ids(log) == ["a", "b", "c", "d", "a"]


def test_retention_drops_whole_segments_that_are_old_and_processed_never_the_newest(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id="a"), ev(event_id="b")], ingested_at=1000.0)  # segment 1: offsets 1-2
    log.append([ev(event_id="c")], ingested_at=1150.0)  # segment 3: offset 3
    log.append([ev(event_id="d")], ingested_at=1300.0)  # segment 4, the newest
    for path in (tmp_path / "j-000000000001.db", tmp_path / "j-000000000003.db"):
        assert path.exists()
    # nothing processed, or not old enough: nothing goes
    assert log.delete_older_than(ingested_before=2000.0, processed_up_to=1, max_rows=10) == 0
    assert log.delete_older_than(ingested_before=1000.0, processed_up_to=4, max_rows=10) == 0
    # the first segment is old and processed; the second is processed but not old enough
    assert log.delete_older_than(ingested_before=1100.0, processed_up_to=4, max_rows=10) == 2
    assert ids(log) == ["c", "d"]  # unlisted at once; its files go on another thread
    log.settle()
    assert files(tmp_path) == ["j-000000000003.db", "j-000000000004.db"]
    assert not any(name.startswith("j-000000000001.") for name in sidecars(tmp_path))  # its -wal and -shm too
    # every old, processed record goes, but the newest segment stays (it may be appended to)
    assert log.delete_older_than(ingested_before=9999.0, processed_up_to=4, max_rows=10) == 1
    assert ids(log) == ["d"]
    assert log.get(1) is None
    assert log.head() == 4
    assert log.append([ev(event_id="e")], ingested_at=1301.0) == [5]  # offsets are never reused
    assert log.append([ev(event_id="f")], ingested_at=9000.0) == [6]


def test_a_reader_of_a_dropped_segment_finds_nothing_and_makes_no_file(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id="a")], ingested_at=1000.0)
    log.append([ev(event_id="b")], ingested_at=1200.0)
    reader = SqliteLog.open_read_only(tmp_path / "j.db")
    stale = reader.segments()  # listed before the drop
    assert log.delete_older_than(ingested_before=1100.0, processed_up_to=2, max_rows=10) == 1
    log.settle()
    assert reader._rows(stale[0], "SELECT count(*) FROM journal", ()) == []
    assert files(tmp_path) == ["j-000000000002.db"]
    assert not any(name.startswith("j-000000000001.") for name in sidecars(tmp_path))  # nor -wal, -shm
    assert [decode_event(r.body).event_id for r in reader.read(0, 10)] == ["b"]
    with pytest.raises(StoreError, match="read-only"):
        reader.delete_older_than(9999.0, 2, 10)


def test_a_segment_file_made_but_not_listed_before_a_crash_is_used_again(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id="a")], ingested_at=1000.0)
    sqlite3.connect(tmp_path / "j-000000000002.db").close()  # the crash came before it was listed
    assert log.append([ev(event_id="b")], ingested_at=1200.0) == [2]
    assert [s.first for s in log.segments()] == [1, 2]
    assert ids(log) == ["a", "b"]


def test_retention_sweeps_segment_files_a_crash_left_unlisted(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id="a")], ingested_at=1000.0)
    log.append([ev(event_id="b")], ingested_at=1200.0)
    log.append([ev(event_id="c")], ingested_at=1400.0)
    # a drop that unlisted segment 1 and crashed before deleting its file; one of segment 2
    # that deleted its file and crashed before its -wal
    log._main().execute("DELETE FROM segments WHERE first_offset = 1")
    (tmp_path / "j-000000000002.db-wal").write_bytes(b"")
    assert files(tmp_path) == ["j-000000000001.db", "j-000000000002.db", "j-000000000003.db"]
    log._main().execute("DELETE FROM segments WHERE first_offset = 2")
    (tmp_path / "j-000000000002.db").unlink()
    assert log.delete_older_than(ingested_before=1100.0, processed_up_to=3, max_rows=10) == 0
    log.settle()
    assert files(tmp_path) == ["j-000000000003.db"]
    assert all(name.startswith("j-000000000003.") for name in sidecars(tmp_path))
    assert (tmp_path / "j.db").exists()  # the main file and its own -wal are not segments'
    assert (tmp_path / "j.db-wal").exists()


def test_a_journal_written_before_segments_is_read_as_the_oldest_and_drained_by_slices(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    write_legacy_journal(path, 2, [(ev(event_id=f"old-{i}"), 1000.0) for i in range(5)])
    log = SqliteLog(path, partitions=2, segment_s=100.0)
    assert log.head() == 5
    assert ids(log) == [f"old-{i}" for i in range(5)]
    # new records go to a segment file after the old head; a retry of an old record is found
    assert log.append([ev(event_id="new-0"), ev(event_id="old-4")], ingested_at=1050.0) == [6, None]
    assert [(s.first, s.path is None) for s in log.segments()] == [(1, True), (6, False)]
    assert ids(log, after=3) == ["old-3", "old-4", "new-0"]
    assert log.get(2) is not None
    assert log.count() == 6
    # retention deletes the old table's rows a slice at a time, then it is no segment at all
    assert log.delete_older_than(ingested_before=1100.0, processed_up_to=6, max_rows=3) == 3
    assert log.delete_older_than(ingested_before=1100.0, processed_up_to=6, max_rows=3) == 2
    assert [s.first for s in log.segments()] == [6]
    assert ids(log) == ["new-0"]
    assert log.append([ev(event_id="new-1")], ingested_at=1060.0) == [7]
    assert SqliteLog(path, partitions=2).head() == 7


def test_an_emptied_journal_written_before_segments_keeps_its_offsets(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    write_legacy_journal(path, 2, [(ev(event_id=f"old-{i}"), 1000.0) for i in range(3)])
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM journal")  # retention took them all, before the upgrade
    conn.commit()
    conn.close()
    log = SqliteLog(path, partitions=2)
    assert log.head() == 3
    assert log.append([ev(event_id="x")], ingested_at=2000.0) == [4]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, 150), st.lists(st.integers(0, 9), max_size=6)),
        max_size=8,
    )
)
def test_across_segments_a_retry_is_a_duplicate_exactly_while_its_first_copy_is_in_the_last_two(
    tmp_path_factory: pytest.TempPathFactory, batches: list[tuple[int, list[int]]]
) -> None:
    """A model of the rule: segments roll once the newest has held records for the span, and
    an append looks in the segment it writes and the one before."""
    log = SqliteLog(tmp_path_factory.mktemp("j") / "j.db", partitions=2, segment_s=100.0)
    segments: list[tuple[float, set[str]]] = []  # (opened_at, event ids) of the model's segments
    stored: list[str] = []
    at = 1000.0
    for gap, numbers in batches:
        at += gap
        if not segments or (segments[-1][1] and at - segments[-1][0] >= 100.0):
            segments.append((at, set()))
        known = set().union(*(ids_ for _, ids_ in segments[-2:]))
        expected: list[int | None] = []
        for n in numbers:
            if f"e-{n}" in known:
                expected.append(None)
                continue
            known.add(f"e-{n}")
            segments[-1][1].add(f"e-{n}")
            stored.append(f"e-{n}")
            expected.append(len(stored))
        assert log.append([ev(event_id=f"e-{n}") for n in numbers], at) == expected
    assert log.head() == len(stored)
    assert ids(log) == stored


def test_a_thread_keeps_a_few_segment_files_open_whatever_it_reads(tmp_path: Path) -> None:
    """So a dropped segment's file is soon closed everywhere, and a reader of many holds few."""
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    for n in range(8):
        log.append([ev(event_id=f"e-{n}")], ingested_at=1000.0 + 100 * n)
    assert len(log.segments()) == 8
    assert ids(log) == [f"e-{n}" for n in range(8)]
    assert [log.get(offset) is not None for offset in (1, 8, 3)] == [True, True, True]
    open_segments = [p for p in log._conns() if p != log.path]
    assert len(open_segments) == OPEN_SEGMENTS
    assert open_segments[-1] == log.segment_path(3)  # the latest used stays


def test_a_journal_of_a_newer_layout_is_refused_and_an_old_one_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    write_legacy_journal(path, 2, [(ev(event_id="old"), 1000.0)])
    reader = SqliteLog.open_read_only(path)  # no server has opened it since segments came
    assert ids(reader) == ["old"]
    with pytest.raises(StoreError, match="appends nothing"):
        reader.append([ev(event_id="x")], 1000.0)
    SqliteLog(path, 2).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="written by a newer Ringfence"):
        SqliteLog(path, 2)


def test_a_reader_sees_the_segments_another_connection_makes_and_drops(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    reader = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id="a")], ingested_at=1000.0)
    assert [s.first for s in reader.segments()] == [1]  # listed, and kept until the main file changes
    log.append([ev(event_id="b")], ingested_at=1200.0)
    assert [s.first for s in reader.segments()] == [1, 2]
    assert ids(reader) == ["a", "b"]
    log.delete_older_than(ingested_before=1100.0, processed_up_to=2, max_rows=10)
    assert [s.first for s in reader.segments()] == [2]


def test_a_listed_segment_whose_file_is_missing_is_an_error_not_an_empty_segment(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id="a")], ingested_at=1000.0)
    log.append([ev(event_id="b")], ingested_at=1200.0)
    log.close()
    (tmp_path / "j-000000000001.db").unlink()  # by hand, or a restore that missed it
    with pytest.raises(StoreError, match=r"j-000000000001\.db is listed but its file is missing"):
        SqliteLog(tmp_path / "j.db", partitions=2).read(0, 10)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_segment_deleted_or_replaced_under_an_appender_takes_no_append(tmp_path: Path, how: str) -> None:
    """Its open connection would write on into the unlinked file: acknowledged, then lost."""
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id="a")], ingested_at=1000.0)
    segment = tmp_path / "j-000000000001.db"
    for suffix in ("", "-wal", "-shm"):
        segment.with_name(segment.name + suffix).unlink(missing_ok=True)
    if how == "replaced":
        sqlite3.connect(segment).close()
    with pytest.raises(StoreError, match=r"j-000000000001\.db was deleted or replaced under the server"):
        log.append([ev(event_id="b")], ingested_at=1001.0)


def test_readiness_on_any_thread_finds_a_segment_replaced_under_the_process(tmp_path: Path) -> None:
    """A thread that opens the segment only after it was replaced holds the new file: the
    check compares with the file the process first opened, which the appender writes into."""
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id="a")], ingested_at=1000.0)
    log.check()
    segment = tmp_path / "j-000000000001.db"
    copy = tmp_path / "copy.db"
    source = sqlite3.connect(segment)
    source.backup(target := sqlite3.connect(copy))
    source.close()
    target.close()
    copy.replace(segment)  # a valid copy of itself, under another inode
    failures: list[BaseException] = []

    def check() -> None:
        try:
            log.check()
        except BaseException as error:  # handed to the test's thread
            failures.append(error)

    thread = threading.Thread(target=check)
    thread.start()
    thread.join()
    assert [str(f) for f in failures] == ["journal segment j-000000000001.db was deleted or replaced under the server"]


def test_a_reader_with_the_file_open_when_it_is_freed_reads_no_error(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=100.0)
    log.append([ev(event_id=f"a-{n}") for n in range(200)], ingested_at=1000.0)
    log.append([ev(event_id="b")], ingested_at=1200.0)
    reader = SqliteLog.open_read_only(tmp_path / "j.db")
    stale = reader.segments()
    assert len(reader.read(0, 1000)) == 201  # its connection to the first segment is open
    log.delete_older_than(ingested_before=1100.0, processed_up_to=201, max_rows=1000)
    log.settle()  # unlinked and freed under the reader's open connection
    rows = reader._rows(stale[0], "SELECT offset FROM journal", ())
    assert set(rows) <= {(n,) for n in range(1, 201)}  # what it still held (cached pages), never an error
    assert [r.offset for r in reader.read(0, 1000)] == [201]


def test_a_round_drops_a_few_segments_a_call_and_says_when_more_may_go(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=10.0)
    for n in range(7):
        log.append([ev(event_id=f"e-{n}")], ingested_at=1000.0 + 20 * n)  # a segment of one record each
    assert log.delete_older_than(ingested_before=9999.0, processed_up_to=7, max_rows=1000) == 1000  # 4 went
    assert [s.first for s in log.segments()] == [5, 6, 7]
    assert log.delete_older_than(ingested_before=9999.0, processed_up_to=7, max_rows=1000) == 2  # all it could
    assert [s.first for s in log.segments()] == [7]
    log.settle()
    assert files(tmp_path) == ["j-000000000007.db"]


def test_a_sweep_leaves_a_segment_being_freed_to_its_thread_and_a_failed_one_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release, real_delete = threading.Event(), journal_module._delete
    calls: list[str] = []

    def slow(path: Path, hurry: threading.Event) -> None:
        if path.parent != tmp_path:  # another test's journal, still being freed
            real_delete(path, hurry)
            return
        calls.append(path.name)
        release.wait(10)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real_delete(path, hurry)

    monkeypatch.setattr(journal_module, "_delete", slow)
    log = SqliteLog(tmp_path / "j.db", partitions=2, segment_s=10.0)
    for n in range(3):
        log.append([ev(event_id=f"e-{n}")], ingested_at=1000.0 + 20 * n)
    log.delete_older_than(ingested_before=9999.0, processed_up_to=3, max_rows=1)  # drops segment 1
    log.delete_older_than(ingested_before=9999.0, processed_up_to=3, max_rows=1)  # 2; its sweep sees 1
    assert files(tmp_path) == ["j-000000000001.db", "j-000000000002.db", "j-000000000003.db"]
    with caplog.at_level("WARNING", logger="ringfence.journal"):
        release.set()
        log.settle()
    assert "deleting dropped journal file j-000000000001.db failed" in caplog.text
    # each once, on the freeing thread: a segment's file, then its duplicate index
    assert calls == ["j-000000000001.db", "j-000000000001.dedup", "j-000000000002.db", "j-000000000002.dedup"]
    assert files(tmp_path) == ["j-000000000001.db", "j-000000000003.db"]
    assert indexes(tmp_path) == ["j-000000000003.dedup"]
    log.delete_older_than(ingested_before=9999.0, processed_up_to=3, max_rows=1)  # its sweep tries again
    log.settle()
    assert files(tmp_path) == ["j-000000000003.db"]
