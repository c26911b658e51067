"""A SQLite file's write-ahead log that grew large under load is cut back once a checkpoint
resets it, not kept at its peak size on disk (a hostile test left a 5.9 GB store WAL)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ringfence.store.connection import WAL_SIZE_LIMIT, WalBound, connect


def test_a_grown_wal_is_cut_back_to_the_limit_after_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    writer, reader = connect(path), connect(path)
    writer.execute("PRAGMA wal_autocheckpoint=0")  # as under load: no checkpoint gets through
    writer.execute("CREATE TABLE t (x BLOB)")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # a reader holding an old snapshot
    blob = b"x" * 65536
    for _ in range(WAL_SIZE_LIMIT // len(blob) + 200):  # past the limit
        writer.execute("INSERT INTO t VALUES (?)", (blob,))
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > WAL_SIZE_LIMIT
    reader.execute("COMMIT")
    writer.execute("PRAGMA wal_checkpoint(RESTART)")  # all copied back: the next write resets the WAL
    writer.execute("INSERT INTO t VALUES (?)", (b"y",))
    writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
    assert wal.stat().st_size <= WAL_SIZE_LIMIT
    writer.close()
    reader.close()


def overlapping_readers(path: Path, stop: threading.Event, hold_s: float = 0.05) -> list[threading.Thread]:
    """Two readers whose read transactions overlap without a gap: one always holds a snapshot."""

    def read(offset_s: float) -> None:
        conn = connect(path)
        time.sleep(offset_s)
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM t").fetchone()
            time.sleep(hold_s)
            conn.execute("COMMIT")
        conn.close()

    threads = [threading.Thread(target=read, args=(hold_s * i / 2,)) for i in range(2)]
    for thread in threads:
        thread.start()
    return threads


@pytest.mark.parametrize("bounded", [True, False])
def test_readers_that_always_overlap_cannot_grow_the_wal_past_its_bound(tmp_path: Path, bounded: bool) -> None:
    """A hostile test: two overlapping counts of one alerts:read key, back to back, kept every
    checkpoint from resetting the store's WAL, which grew at the write rate until the disk
    filled. Its writer now resets it past a bound (here 2 MiB), waiting for the readers."""
    path = tmp_path / "store.sqlite3"
    writer = connect(path)
    writer.execute("CREATE TABLE t (x BLOB)")
    bound = WalBound(path, restart_at=2 * 2**20, check_every_s=0.0)  # every commit looks
    stop = threading.Event()
    readers = overlapping_readers(path, stop)
    wal, peak = Path(f"{path}-wal"), 0
    try:
        for _ in range(400):  # 25 MiB written
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO t VALUES (?)", (b"x" * 65536,))
            writer.execute("COMMIT")
            if bounded:
                bound.committed(writer)
            peak = max(peak, wal.stat().st_size)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        writer.close()
    if bounded:
        assert peak < 3 * 2**20, f"the WAL reached {peak >> 20} MiB"
    else:  # what the bound prevents: SQLite's own checkpoints never reset it
        assert peak > 20 * 2**20, f"the WAL reached {peak >> 20} MiB only"


@pytest.mark.serial  # a share of 3 s
def test_a_read_longer_than_the_wait_holds_writers_off_a_small_share_of_its_time(tmp_path: Path) -> None:
    """A review: a reader holding its snapshot longer than the reset's wait (an audit verification,
    a backup) foiled every reset, and the next one came a second later: every commit waited 10 s
    out of 11. Each try after a foiled one now comes twice as late."""
    path = tmp_path / "store.sqlite3"
    writer, reader = connect(path), connect(path)
    writer.execute("CREATE TABLE t (x BLOB)")
    for _ in range(40):
        writer.execute("INSERT INTO t VALUES (?)", (b"x" * 65536,))
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # a snapshot held for the whole test
    bound = WalBound(path, restart_at=2**20, check_every_s=0.05, wait_ms=200, backoff_max_s=2.0)
    held = 0.0
    began = time.monotonic()
    while time.monotonic() - began < 3.0:
        writer.execute("INSERT INTO t VALUES (?)", (b"y" * 4096,))
        started = time.monotonic()
        bound.committed(writer)
        held += time.monotonic() - started
    reader.execute("COMMIT")
    # a try every 0.05 s, each waiting 0.2 s, held them 80 % of the time; with the back-off 5 tries
    assert held < 1.6, f"writers held {held:.1f} s of 3"
    assert held > 0.15  # it did try: the WAL was past its bound all along
    WalBound(path, restart_at=2**20).committed(writer)  # the reader gone, a try resets it
    assert Path(f"{path}-wal").stat().st_size == 0
    writer.close()
    reader.close()
