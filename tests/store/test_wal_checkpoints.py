"""The store's write-ahead log copied into its file by a thread of its own (``WalCheckpointer``):
commits of a store opened for it leave the copy to that thread, which does it, and the data
reads back the same whoever copied it, also after the process's connections are gone."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ringfence.config import Settings
from ringfence.runtimes.embedded import platform as embedded
from ringfence.store.sqlite import WAL_BACKSTOP_PAGES, SqliteStore, WalCheckpointer

ROWS = 4000
ROW = b"x" * 2000  # 8 MB in all: past SQLite's 1,000 pages, under the backstop


def fill(store: SqliteStore) -> None:
    with store.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (n INTEGER PRIMARY KEY, body BLOB)")
    for start in range(0, ROWS, 500):
        with store.transaction() as conn:
            conn.executemany("INSERT INTO filler VALUES (?, ?)", [(n, ROW) for n in range(start, start + 500)])


def wait_for(condition: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_commits_leave_the_copy_to_the_thread_which_makes_it(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path, background_checkpoints=True)
    assert store.conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_BACKSTOP_PAGES
    before = path.stat().st_size
    fill(store)
    assert path.stat().st_size - before < len(ROW) * ROWS / 2  # still in the log: no commit copied it
    checkpoints = WalCheckpointer(path, every_s=0.05)
    checkpoints.start()
    try:
        assert wait_for(lambda: path.stat().st_size - before > 0.9 * len(ROW) * ROWS)
    finally:
        checkpoints.stop()
    assert not any(t.name == "ringfence-wal-checkpoints" for t in threading.enumerate())
    store.close()
    reopened = sqlite3.connect(path)
    assert reopened.execute("SELECT count(*), sum(length(body)) FROM filler").fetchone() == (ROWS, ROWS * len(ROW))
    reopened.close()


def test_a_store_not_opened_for_it_checkpoints_in_its_commits(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)
    assert store.conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    before = path.stat().st_size
    fill(store)
    assert path.stat().st_size - before > len(ROW) * ROWS / 2
    store.close()


def test_the_platform_runs_the_thread_while_it_runs(tmp_path: Path) -> None:
    platform = embedded.Platform(Settings(data_dir=tmp_path, ingest_process=False))
    assert platform.store.conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_BACKSTOP_PAGES
    platform.start()
    try:
        assert platform.checkpoints is not None
        assert platform.checkpoints.running
    finally:
        platform.stop()
    assert platform.checkpoints is None
    assert not any(t.name == "ringfence-wal-checkpoints" for t in threading.enumerate())


def test_a_file_it_cannot_open_is_logged_and_the_commits_copy_as_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoints = WalCheckpointer(tmp_path / "no such dir" / "store.sqlite3", every_s=0.05)
    checkpoints.start()
    assert wait_for(lambda: not checkpoints.running)
    checkpoints.stop()
    assert "no background checkpoints of store.sqlite3" in caplog.text
