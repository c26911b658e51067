"""What the store's SQL runs on: a DB-API connection in autocommit mode.

``sqlite3.Connection`` satisfies it as is; :class:`ringfence.store.postgres.PgConnection`
adapts psycopg to it, so the repositories are written once, in the SQL both engines share.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ringfence.private_files import private_sqlite

log = logging.getLogger("ringfence.store")


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
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # a WAL that grew under load (a checkpoint cannot reset it while readers hold older
        # snapshots) is cut back to this once one does, instead of keeping its peak size on disk
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
    except BaseException:
        conn.close()
        raise
    return conn


WAL_SIZE_LIMIT = 64 * 2**20
WAL_RESTART_AT = 2 * WAL_SIZE_LIMIT  # a WAL past this is reset by its writer (WalBound)
WAL_CHECK_EVERY_S = 1.0
# for the readers of older snapshots to finish, and those that began meanwhile (before all was
# copied back: they read the WAL too); writers wait meanwhile
WAL_RESTART_WAIT_MS = 2_000
WAL_BACKOFF_MAX_S = 16.0  # after resets a long read foiled, one at most this often
BUSY_TIMEOUT_MS = 30_000


class WalBound:
    """Keeps a SQLite file's write-ahead log from growing without bound under readers.

    SQLite's own checkpoints copy frames back but never wait for readers, and the WAL starts
    over only once no reader holds a snapshot in it: readers that overlap without a gap (two
    reads of half a second each, back to back, from one ``alerts:read`` key) kept it growing
    at the write rate, 750 MiB in 30 s in a hostile test, until the disk filled. So its writer
    looks at its size after a commit (once a second at most), and past :data:`WAL_RESTART_AT`
    checkpoints it in ``TRUNCATE`` mode: holding off other writers, that waits (up to
    ``wait_ms``) for the readers of older snapshots to finish, copies the WAL back, waits for
    the readers that began meanwhile (a reader that begins once all is copied back reads the
    file, not the WAL), then empties it: about two short reads' time. A read longer than the
    wait (an audit verification, a backup) foils it; the next try comes twice as late each time
    (up to ``backoff_max_s``), so such a read holds writers off a small share of its time (it
    held every commit 10 s out of 11 when each try came a second after the last: a review)."""

    def __init__(
        self,
        path: Path,
        restart_at: int = WAL_RESTART_AT,
        check_every_s: float = WAL_CHECK_EVERY_S,
        wait_ms: int = WAL_RESTART_WAIT_MS,
        backoff_max_s: float = WAL_BACKOFF_MAX_S,
    ) -> None:
        self.wal = Path(f"{path}-wal")
        self.restart_at = restart_at
        self.check_every_s = check_every_s
        self.wait_ms = wait_ms
        self.backoff_max_s = backoff_max_s
        self._next_check = 0.0
        self._backoff_s = check_every_s

    def committed(self, conn: sqlite3.Connection) -> None:
        """After a commit on ``conn`` (one of the file's writers), outside any transaction."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.check_every_s
        try:
            size = self.wal.stat().st_size
        except OSError:
            return
        if size <= self.restart_at:
            return
        busy, why = 1, ""
        try:  # after the commit: a failure here must not read as the commit's
            conn.execute(f"PRAGMA busy_timeout={self.wait_ms}")
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error as error:
            why = type(error).__name__
        if not busy:
            self._backoff_s = self.check_every_s
            return
        self._backoff_s = min(max(2 * self._backoff_s, self.check_every_s), self.backoff_max_s)
        self._next_check = time.monotonic() + self._backoff_s
        log.warning(
            "%s is %d MiB: %s kept it from being reset; trying again in %.0f s",
            self.wal.name,
            size >> 20,
            why or "a read longer than the wait",
            self._backoff_s,
        )


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
