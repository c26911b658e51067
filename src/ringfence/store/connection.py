"""What the store's SQL runs on: a DB-API connection in autocommit mode.

``sqlite3.Connection`` satisfies it as is; :class:`ringfence.store.postgres.PgConnection`
adapts psycopg to it, so the repositories are written once, in the SQL both engines share.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ringfence.private_files import private_sqlite


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


def connect(path: Path, synchronous: str = "full", cache_mib: int = 2, *, create: bool = True) -> sqlite3.Connection:
    """A connection with the pragmas every Ringfence SQLite file uses.

    ``cache_mib``: its page cache. The busiest writers (the processor's store connection, the
    ingest worker's journal connection) take a large one: they update B-trees at random
    places (engine state, the duplicate index), which otherwise re-read pages from disk.
    ``create=False``: the file must exist (sqlite3.OperationalError if not), and is not made.
    """
    try:
        private_sqlite(path, create=create)  # 0600 before SQLite writes a byte (its -wal/-shm follow)
    except FileNotFoundError as missing:
        raise sqlite3.OperationalError(f"unable to open database file {path}") from missing
    target = str(path) if create else f"{path.resolve().as_uri()}?mode=rw"
    conn = sqlite3.connect(target, timeout=30.0, isolation_level=None, check_same_thread=False, uri=not create)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=30000")
        # a WAL that grew under load (a checkpoint cannot reset it while readers hold older
        # snapshots) is cut back to this once one does, instead of keeping its peak size on disk
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
    except BaseException:
        conn.close()
        raise
    return conn


WAL_SIZE_LIMIT = 64 * 2**20

FileIdentity = tuple[int, int]  # (device, inode)


def file_identity(path: Path) -> FileIdentity | None:
    """Which file ``path`` names now; None if none. A SQLite file deleted or replaced under an
    open connection takes its commits into the unlinked file, lost: compared with the identity
    it had when connected, this finds it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)
