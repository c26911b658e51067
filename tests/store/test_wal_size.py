"""A SQLite file's write-ahead log that grew large under load is cut back once a checkpoint
resets it, not kept at its peak size on disk (a hostile test left a 5.9 GB store WAL)."""

from __future__ import annotations

from pathlib import Path

from ringfence.store.connection import WAL_SIZE_LIMIT, connect


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
