"""The journal's duplicate index (RocksDB, a database a segment): written after the journal's
commit and caught up from the journal when opened, so a kill between the two, a failed write of
the index or a power cut that took the journal's tail never makes a retry look new or a new
event look like a retry; segments written with SQLite's index before it are still searched."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.errors import StoreError
from ringfence.events import decode_event
from ringfence.runtimes.embedded import dedup_index
from ringfence.runtimes.embedded import journal as journal_module
from ringfence.runtimes.embedded.journal import SqliteLog
from tests.helpers.factories import ev


def ids(log: SqliteLog) -> list[str]:
    return [decode_event(r.body).event_id for r in log.read(0, 1000)]


def batch(prefix: str, n: int = 5) -> list[Any]:
    return [ev(event_id=f"{prefix}-{i}") for i in range(n)]


def _append_then_die_before_indexing(path: str) -> None:
    """In a child: append a batch and be killed (-9) after the journal's commit, before the
    index's write."""
    from ringfence.runtimes.embedded import journal
    from tests.helpers.factories import ev

    def killed(*_: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    log = journal.SqliteLog(Path(path), 2)
    log.append([ev(event_id=f"a-{i}") for i in range(5)], 1.0)
    journal.SqliteLog._index_appended = killed  # type: ignore[method-assign]
    log.append([ev(event_id=f"b-{i}") for i in range(5)], 2.0)


def test_a_kill_between_the_journals_commit_and_the_indexs_write_loses_no_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    child = multiprocessing.get_context("spawn").Process(target=_append_then_die_before_indexing, args=(str(path),))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    log = SqliteLog(path, 2)
    assert log.head() == 10  # the second batch was committed, its keys never indexed
    assert log.append(batch("b"), 3.0) == [None] * 5  # the producer's retry: duplicates
    assert log.append([*batch("a"), ev(event_id="c-0")], 3.0) == [None] * 5 + [11]
    assert ids(log) == [f"a-{i}" for i in range(5)] + [f"b-{i}" for i in range(5)] + ["c-0"]


def test_a_failed_write_of_the_index_keeps_the_events_and_indexes_them_on_the_next_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = SqliteLog(tmp_path / "j.db", 2)
    real_add = dedup_index.SegmentIndex.add
    failures = iter([OSError("No space left on device")])

    def failing(self: dedup_index.SegmentIndex, keys: Any, covered: int) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real_add(self, keys, covered)

    monkeypatch.setattr(dedup_index.SegmentIndex, "add", failing)
    with caplog.at_level("ERROR", logger="ringfence.journal"):
        assert log.append(batch("a"), 1.0) == [1, 2, 3, 4, 5]  # stored: the producer is told so
    assert "indexing appended records failed" in caplog.text
    assert log.append(batch("a"), 2.0) == [None] * 5
    assert log.append([ev(event_id="b-0")], 2.0) == [6]


def test_an_index_ahead_of_the_journal_is_indexed_anew(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without full sync a power cut may take the journal's last commits and leave the index's:
    those events were never stored, so their retries are new."""
    path = tmp_path / "j.db"
    log = SqliteLog(path, 2, synchronous="normal")
    log.append(batch("a") + batch("b"), 1.0)
    log.close()
    segment = next(tmp_path.glob("j-*.db"))
    with closing(sqlite3.connect(segment)) as conn, conn:  # the cut: the journal's tail gone, the index's kept
        conn.execute("DELETE FROM journal WHERE offset > 5")
    log = SqliteLog(path, 2, synchronous="normal")
    with caplog.at_level("WARNING", logger="ringfence.journal"):
        assert log.append(batch("b") + batch("a", 1), 2.0) == [6, 7, 8, 9, 10, None]
    assert "ahead of its segment" in caplog.text
    assert ids(log) == [f"a-{i}" for i in range(5)] + [f"b-{i}" for i in range(5)]


def test_a_segment_written_with_sqlites_index_is_searched_and_never_appended_to_again(tmp_path: Path) -> None:
    """A journal from before the duplicate index: its newest segment, with records, is closed
    for appends (a new one opens at once); an empty one loses SQLite's index and is used."""
    path = tmp_path / "j.db"
    log = SqliteLog(path, 2)
    log.append(batch("a"), 1.0)
    log.close()
    old = next(tmp_path.glob("j-*.db"))
    with closing(sqlite3.connect(old)) as conn, conn:  # as the code before wrote it: SQLite's index, no RocksDB's
        conn.execute("CREATE UNIQUE INDEX journal_event_id ON journal (source, event_id)")
    for index in tmp_path.glob("j-*.dedup"):
        for f in index.iterdir():
            f.unlink()
        index.rmdir()
    log = SqliteLog(path, 2)
    assert log.append([*batch("a"), ev(event_id="b-0")], 2.0) == [None] * 5 + [6]  # within the span
    assert [s.first for s in log.segments()] == [1, 6]
    assert not dedup_index.index_path(old).exists()  # searched through SQLite's index
    assert log.append([ev(event_id="b-0"), ev(event_id="a-1")], 3.0) == [None, None]

    empty = tmp_path / "e.db"
    SqliteLog(empty, 2).close()
    made = SqliteLog(empty, 2)
    made._writable(made.segments(), 1.0)  # a segment file, listed and empty
    made.close()
    segment = next(tmp_path.glob("e-*.db"))
    with closing(sqlite3.connect(segment)) as conn, conn:
        conn.execute("CREATE UNIQUE INDEX journal_event_id ON journal (source, event_id)")
    log = SqliteLog(empty, 2)
    assert log.append(batch("a"), 2.0) == [1, 2, 3, 4, 5]
    assert [s.first for s in log.segments()] == [1]
    with closing(sqlite3.connect(segment)) as conn, conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index'").fetchone() == (0,)


def _hold_and_see(path: Path, monkeypatch: pytest.MonkeyPatch, wait_s: float, held_s: float) -> tuple[Any, float]:
    """An append while a child process holds the index for ``held_s``; the append's result (or
    error) and how long it took. The journal's lock is let go while it waits: the child appends
    once more, under it, before it exits."""
    spawn = multiprocessing.get_context("spawn")
    ready, go = spawn.Event(), spawn.Event()
    child = spawn.Process(target=_hold_the_index, args=(str(path), ready, go))
    child.start()
    try:
        assert ready.wait(60)
        monkeypatch.setattr(dedup_index, "OPEN_WAIT_S", wait_s)
        threading.Timer(held_s, go.set).start()
        log = SqliteLog(path, 2)
        started = time.monotonic()
        try:
            result: Any = log.append([ev(event_id="held-0"), ev(event_id="new-0")], 2.0)
        except StoreError as error:
            result = error
        return result, time.monotonic() - started
    finally:
        go.set()
        child.join(60)
        assert child.exitcode == 0


def _hold_the_index(path: str, ready: Any, go: Any) -> None:
    """In a child: append, keep the journal (and so its duplicate index) open until told, then
    append once more and exit."""
    from ringfence.runtimes.embedded.journal import SqliteLog
    from tests.helpers.factories import ev

    log = SqliteLog(Path(path), 2)
    log.append([ev(event_id="held-0")], 1.0)
    ready.set()
    go.wait(60)
    log.append([ev(event_id="held-1")], 1.5)


def test_an_append_waits_while_another_process_holds_the_index_and_goes_on_once_it_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offsets, took = _hold_and_see(tmp_path / "j.db", monkeypatch, wait_s=30.0, held_s=0.5)
    assert took >= 0.5
    assert offsets == [None, 3]  # after the holder's second append: it had the journal's lock meanwhile


def test_an_append_refused_for_longer_than_the_wait_fails_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.db"
    error, took = _hold_and_see(path, monkeypatch, wait_s=0.3, held_s=5.0)
    assert isinstance(error, dedup_index.IndexHeld)
    assert "held by another process" in str(error)
    assert 0.3 <= took < 5.0
    log = SqliteLog(path, 2)
    assert log.append([ev(event_id="held-0"), ev(event_id="new-0")], 3.0) == [None, 3]  # 2: held-1


def test_a_journal_lets_go_of_the_indexes_of_segments_it_no_longer_searches(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", 2, segment_s=10.0)
    for n in range(4):
        log.append([ev(event_id=f"e-{n}")], 1000.0 + 20 * n)
    assert sorted(log._indexes) == [3, 4]  # the newest segment's and the one before's
    log.close()
    assert not log._indexes
    assert not [p for p in dedup_index._opened if p.parent == tmp_path]
    assert sorted(p.name for p in tmp_path.glob("j-*.dedup")) == [f"j-00000000000{n}.dedup" for n in (1, 2, 3, 4)]
    assert all(p.stat().st_mode & 0o077 == 0 for p in tmp_path.glob("j-*.dedup"))  # the owner's only


def test_two_journals_of_one_process_share_the_index(tmp_path: Path) -> None:
    first, second = SqliteLog(tmp_path / "j.db", 2), SqliteLog(tmp_path / "j.db", 2)
    assert first.append(batch("a"), 1.0) == [1, 2, 3, 4, 5]
    assert second.append([*batch("a"), ev(event_id="b-0")], 1.0) == [None] * 5 + [6]
    first.close()
    assert first.append([ev(event_id="b-0")], 1.0) == [None]  # the one second holds
    assert second.append([ev(event_id="b-1")], 1.0) == [7]
    first.close()
    second.close()
    assert not [p for p in dedup_index._opened if p.parent == tmp_path]
    third = SqliteLog(tmp_path / "j.db", 2)
    assert third.append([ev(event_id="b-1"), ev(event_id="a-0"), ev(event_id="c-0")], 1.0) == [None, None, 8]
    third.close()
    assert not [p for p in dedup_index._opened if p.parent == tmp_path]


@given(st.text(max_size=6), st.text(max_size=6), st.text(max_size=6), st.text(max_size=6))
def test_no_two_events_share_a_key(source: str, event_id: str, other_source: str, other_id: str) -> None:
    if (source, event_id) != (other_source, other_id):
        assert dedup_index.key(source, event_id) != dedup_index.key(other_source, other_id)
    assert not dedup_index.key(source, event_id).startswith(dedup_index.COVERED[:1])


def test_a_dropped_segments_index_goes_with_it(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "j.db", 2, segment_s=10.0)
    for n in range(3):
        log.append([ev(event_id=f"e-{n}")], 1000.0 + 20 * n)
    log.delete_older_than(ingested_before=9999.0, processed_up_to=3, max_rows=10)
    log.settle()
    left = sorted(p.name for p in tmp_path.glob("j-*") if not p.name.endswith(("-wal", "-shm")))
    assert left == ["j-000000000003.db", "j-000000000003.dedup"]
    assert journal_module.SqliteLog(tmp_path / "j.db", 2).append([ev(event_id="e-2")], 2000.0) == [None]


def test_a_damaged_index_is_made_again_from_its_segment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j.db"
    log = SqliteLog(path, 2)
    log.append(batch("a"), 1.0)
    log.close()
    index = next(tmp_path.glob("j-*.dedup"))
    (index / "CURRENT").write_text("MANIFEST-999999\n")  # names a manifest that is not there
    log = SqliteLog(path, 2)
    with caplog.at_level("WARNING", logger="ringfence.journal"):
        assert log.append([*batch("a"), ev(event_id="b-0")], 2.0) == [None] * 5 + [6]
    assert "is damaged" in caplog.text
    stale = [p.name for p in tmp_path.glob("j-*.dedup.stale-*")]
    assert len(stale) == 1  # moved aside whole, by one rename
    log.delete_older_than(ingested_before=0.0, processed_up_to=0, max_rows=10)  # a round's sweep
    log.settle()
    assert not list(tmp_path.glob("j-*.dedup.stale-*"))


def test_an_index_ahead_of_a_segment_before_the_newest_is_made_again(tmp_path: Path) -> None:
    """Each SQLite file syncs on its own: a power cut may take the tail of the segment before
    the newest and leave the newest listed. The index of that segment must not still hold the
    lost events, or their retries would be taken for duplicates and never stored."""
    path = tmp_path / "j.db"
    log = SqliteLog(path, 2, segment_s=10.0, synchronous="normal")
    log.append(batch("a"), 1000.0)
    log.append([ev(event_id="b-0")], 1020.0)  # a new segment from offset 6
    log.close()
    first = tmp_path / "j-000000000001.db"
    with closing(sqlite3.connect(first)) as conn, conn:
        conn.execute("DELETE FROM journal WHERE offset > 3")  # a-3, a-4 lost
    log = SqliteLog(path, 2, segment_s=10.0, synchronous="normal")
    assert log.append(batch("a"), 1021.0) == [None, None, None, 7, 8]


def test_an_indexs_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        log = SqliteLog(tmp_path / "j.db", 2)
        log.append(batch("a"), 1.0)
        log.close()
    finally:
        os.umask(previous)
    made = list(next(tmp_path.glob("j-*.dedup")).iterdir())
    assert {p.name for p in made} >= {"CURRENT", "LOCK"}
    assert {oct(p.stat().st_mode & 0o777) for p in made} == {"0o600"}


def _worker(path: str, conn: Any) -> None:
    """In a child, as the ingest worker: append what the parent sends, until it sends None."""
    from ringfence.runtimes.embedded.journal import SqliteLog
    from tests.helpers.factories import ev

    log = SqliteLog(Path(path), 2, segment_s=10.0)
    while (request := conn.recv()) is not None:
        names, at = request
        try:
            conn.send(log.append([ev(event_id=n) for n in names], at))
        except Exception as error:
            conn.send(repr(error))


def test_retention_in_another_process_drops_the_segment_the_appender_searches_and_ingest_goes_on(
    tmp_path: Path,
) -> None:
    """The production layout: the ingest worker appends (holding the newest segments' indexes)
    and the server's processor drops segments, the one before the newest included when the
    retention is shorter than a span."""
    path = tmp_path / "j.db"
    SqliteLog(path, 2, segment_s=10.0).close()
    spawn = multiprocessing.get_context("spawn")
    parent, child_end = spawn.Pipe()
    child = spawn.Process(target=_worker, args=(str(path), child_end))
    child.start()
    try:
        parent.send((["e-0"], 1000.0))
        assert parent.recv() == [1]
        parent.send((["e-1"], 1020.0))  # segment 2; the worker has segment 1's index open
        assert parent.recv() == [2]
        retention = SqliteLog(path, 2, segment_s=10.0)
        assert retention.delete_older_than(ingested_before=9999.0, processed_up_to=2, max_rows=10) == 1
        retention.settle()
        assert not (tmp_path / "j-000000000001.dedup").exists()
        parent.send((["e-0", "e-1", "e-2"], 1021.0))  # e-0's first copy is gone with its segment
        assert parent.recv() == [3, None, 4]
        parent.send(None)
    finally:
        child.join(60)
    assert child.exitcode == 0


def test_a_segment_dropped_between_the_list_and_its_search_is_taken_for_holding_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention may drop the segment before the newest (a retention shorter than a span) while
    an append, having read the list, searches it: that append goes on as if it were gone."""
    path = tmp_path / "j.db"
    log = SqliteLog(path, 2, segment_s=10.0)
    log.append([ev(event_id="e-0")], 1000.0)
    log.append([ev(event_id="e-1")], 1020.0)  # segment 2; segment 1's index is the one before
    retention = SqliteLog(path, 2, segment_s=10.0)
    real_holding = dedup_index.SegmentIndex.holding
    dropped: list[Path] = []

    def drop_first(self: dedup_index.SegmentIndex, keys: list[bytes]) -> set[bytes]:
        if self.path.name == "j-000000000001.dedup" and not dropped:
            retention.delete_older_than(ingested_before=9999.0, processed_up_to=2, max_rows=10)
            retention.settle()
            dropped.append(self.path)
        return real_holding(self, keys)

    monkeypatch.setattr(dedup_index.SegmentIndex, "holding", drop_first)
    assert log.append([ev(event_id="e-0"), ev(event_id="e-2")], 1021.0) == [3, 4]  # e-0's first copy went
    assert dropped
    assert not (tmp_path / "j-000000000001.dedup").exists()
    assert log.append([ev(event_id="e-0")], 1022.0) == [None]


def test_an_index_that_cannot_be_opened_for_want_of_space_is_not_taken_for_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rocksdict

    path = tmp_path / "j.db"
    log = SqliteLog(path, 2)
    log.append(batch("a"), 1.0)
    log.close()

    def full(*_: object) -> None:
        raise Exception("IO error: No space left on device: While appending to file")  # as rocksdict raises

    with monkeypatch.context() as patched:
        patched.setattr(rocksdict, "Rdict", full)
        with pytest.raises(StoreError, match="cannot be opened: IO error: No space left"):
            SqliteLog(path, 2).append([ev(event_id="b-0")], 2.0)
    assert not list(tmp_path.glob("j-*.dedup.stale-*"))  # kept: nothing to make again
    assert SqliteLog(path, 2).append([ev(event_id="b-0"), *batch("a", 1)], 2.0) == [6, None]
