"""The embedded runtime's log: an append-only journal of SQLite segment files in the data dir.

Each segment holds the records of about an hour of ingest (``segment_s``) in its own file,
next to the journal's main file (``journal.sqlite3``), which lists them and holds the
partition count. Offsets are explicit and dense across segments: a producer's retry of an
acknowledged event is reported, not stored, and consumes no offset, so ``head - processed``
is the exact lag.

Why segments: retention drops a whole segment file once every record in it is processed and
old enough, instead of deleting rows (a single journal spent 15-65 µs a record deleting from
its random-key duplicate index: 9-38 s of every minute at the reference load). The newest
segment is never dropped (ingest appends to it), so records are kept at least the retention,
at most a span longer, or until ingest opens another. A dropped file is deleted on a thread of
its own, its blocks freed a step at a time (every fsync on the disk waits while a file's blocks
are freed). Each segment's duplicate index spans its own records only: a span's, not the whole
retention's.

Duplicates: each segment has a duplicate index of (source, event_id), a RocksDB database beside
its file (:mod:`ringfence.runtimes.embedded.dedup_index`, written after the journal's commit and
caught up from it when opened), and each append looks its events up in the index of the segment
it writes and of the one before. An event is therefore found to be a duplicate whenever it comes
again within ``segment_s`` of its first ingest (its first copy is in the same segment or the one
before); later than that, only while its first copy is still in one of those two.

A segment written before those indexes carries SQLite's unique index on (source, event_id)
instead: appends never go to one again (the first append opens a new segment, or drops the
index of an empty one), and it is searched through that index while it is the one before.

A journal written before segments (its records in the main file's ``journal`` table) is read
as the oldest segment: new records go to segment files, and retention deletes the old table's
rows a slice at a time until it is empty.

One writer at a time: appends hold a lock file, so a worker left over from a killed server
cannot interleave its appends with its successor's. A process keeps the duplicate indexes it
appends with open, and RocksDB lets one process open each: an appender of another process
retries for ``dedup_index.OPEN_WAIT_S`` (the lock file let go meanwhile), then fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import random
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ringfence.errors import StoreError, StoreUnavailable
from ringfence.events.model import Event, StoredEvent
from ringfence.log.base import Record, partition_of_key, stored_event
from ringfence.private_files import SQLITE_SIDECARS, private_file
from ringfence.runtimes.embedded import dedup_index
from ringfence.runtimes.embedded.dedup_index import SegmentIndex, index_path
from ringfence.store.connection import FileIdentity, WalBound, connect, file_identity
from ringfence.store.retention import delete_oldest

log = logging.getLogger("ringfence.journal")

SCHEMA_VERSION = "3"  # 3: segments without SQLite's duplicate index (older code must not append)
SEGMENT_S = 3600.0  # ingest time a segment spans: the duplicate window, and retention's granularity
PROBE_CHUNK = 400  # (source, event_id) pairs an IN list holds: 800 bound values
HELD_RETRY_S = 0.05  # an append waiting for another process to let go of a duplicate index
OPEN_SEGMENTS = 3  # segment files a thread keeps open (the newest, the one before, one read)
DROPS_PER_CALL = 4  # segments a retention call unlists at most (each an fsync'd delete in the main file)
# A dropped segment's blocks are freed a step at a time: ext4 frees a file's blocks in its
# journal, and every fsync on the disk waits behind it (one unlink of 2 GiB held them 150-200 ms;
# 8 MiB steps 50 ms apart kept their p99 under 3 ms).
FREE_STEP_BYTES = 8 << 20
FREE_PAUSE_S = 0.05
_INSERT = "INSERT INTO journal (offset, partition, source, event_id, ingested_at, body) VALUES (?, ?, ?, ?, ?, ?)"
_RECORD = """
    partition INTEGER NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    body BLOB NOT NULL
"""
# SQLite's duplicate index: the old table's, and that of segments written before dedup_index
_UNIQUE_NAME = "journal_event_id"
_UNIQUE = f"CREATE UNIQUE INDEX IF NOT EXISTS {_UNIQUE_NAME} ON journal (source, event_id);"
# the main file: the segments' list, and the records of a journal written before segments
_MAIN_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS journal (offset INTEGER PRIMARY KEY AUTOINCREMENT, {_RECORD});
{_UNIQUE}
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (first_offset INTEGER PRIMARY KEY, opened_at REAL NOT NULL);
"""
# a segment: offsets given by the appender; the newest ingest time held, for retention
_SEGMENT_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS journal (offset INTEGER PRIMARY KEY, {_RECORD});
CREATE TABLE IF NOT EXISTS newest (one INTEGER PRIMARY KEY CHECK (one = 1), ingested_at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Segment:
    """A segment: its first offset, when it was opened, and its file (None: the records of a
    journal written before segments, in the main file)."""

    first: int
    opened_at: float
    path: Path | None


class SqliteLog:
    """A partitioned journal of segment files. Thread-safe: one connection per thread and file.
    One process appends (the ingest worker); any may read, ``read_only`` ones included."""

    def __init__(
        self,
        path: Path,
        partitions: int,
        synchronous: str = "full",
        cache_mib: int = 2,
        *,
        segment_s: float = SEGMENT_S,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.segment_s = segment_s
        self.read_only = read_only
        self._synchronous = synchronous
        self._cache_mib = cache_mib
        self._local = threading.local()
        self._opened: dict[Path, FileIdentity | None] = {}  # each file as this process first opened it
        self._freer = _Freer()
        self._segment_name = re.compile(
            rf"{re.escape(path.stem)}-(\d{{12}}){re.escape(path.suffix)}({'|'.join(SQLITE_SIDECARS)})?", re.ASCII
        )
        self._index_name = re.compile(
            rf"{re.escape(path.stem)}-(\d{{12}}){re.escape(dedup_index.SUFFIX)}({re.escape(dedup_index.STALE)}-\d+)?",
            re.ASCII,
        )
        self._indexes: dict[int, SegmentIndex] = {}  # the appender's, by segment: the newest two
        self._unique: dict[Path, bool] = {}  # whether a segment file carries SQLite's index
        self._writing = threading.Lock()
        self._wal: WalBound | None = None  # of the segment appends go to
        self._writer_lock: int | None = None  # the lock file's descriptor, opened by the first append
        conn = self._main()
        version = (
            conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if _has_meta(conn) else None
        )
        if version is not None and int(version[0]) > int(SCHEMA_VERSION):
            raise StoreError(f"journal {path} was written by a newer Ringfence (schema {version[0]})")
        if not read_only:
            conn.executescript(_MAIN_SCHEMA)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('partitions', ?)", (str(partitions),))
        stored = int(conn.execute("SELECT value FROM meta WHERE key='partitions'").fetchone()[0])
        if stored != partitions:
            raise StoreError(
                f"journal {path} was created with {stored} partitions; "
                f"start with partitions={stored} or use a new data dir"
            )
        self.partitions = partitions

    @classmethod
    def open_read_only(cls, path: Path) -> SqliteLog:
        """A reader of an existing journal that writes nothing (a backtest's child process)."""
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            partitions = int(conn.execute("SELECT value FROM meta WHERE key='partitions'").fetchone()[0])
        finally:
            conn.close()
        return cls(path, partitions, read_only=True)

    # -- files and connections ------------------------------------------------------------------

    def _connect(self, path: Path, *, create: bool = True) -> sqlite3.Connection:
        if self.read_only:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        conn = connect(path, self._synchronous, self._cache_mib, create=create)
        identity = file_identity(path)
        self._files()[path] = identity
        self._opened.setdefault(path, identity)
        return conn

    def _files(self) -> dict[Path, FileIdentity | None]:
        """This thread's connections' files, as connected to."""
        files: dict[Path, FileIdentity | None] | None = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = {}
        return files

    @staticmethod
    def _still_there(path: Path, connected: FileIdentity | None) -> None:
        """StoreUnavailable unless ``path`` is still the file ``connected`` to: one deleted under
        the server takes the appends of a connection that holds it open, and they are lost."""
        if connected is None or file_identity(path) != connected:
            raise StoreUnavailable(f"journal segment {path.name} was deleted or replaced under the server")

    def check(self) -> None:
        """StoreError if the segment appends go to is no longer the file this process first
        opened (for readiness, on any thread: the appender finds it at its next append)."""
        segments = self.segments()
        if self.read_only or not segments:
            return
        writable = segments[-1]
        path = writable.path or self.path
        if path in self._opened or self._conn(writable) is not None:  # opened now, if it had not been
            self._still_there(path, self._opened.get(path))

    def _conns(self) -> dict[Path, sqlite3.Connection]:
        conns: dict[Path, sqlite3.Connection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def _main(self) -> sqlite3.Connection:
        conns = self._conns()
        conn = conns.get(self.path)
        if conn is None:
            conn = conns[self.path] = self._connect(self.path)
        return conn

    def _conn(self, segment: Segment) -> sqlite3.Connection | None:
        """``segment``'s connection; None if its file is gone (retention dropped it since the
        list was read: a reader must not create it again; StoreError if it is still listed). A
        thread keeps a few open, the latest used, so a reader of many segments holds few files,
        and a file retention drops is soon closed everywhere."""
        if segment.path is None:
            return self._main()
        conns = self._conns()
        conn = conns.pop(segment.path, None)
        if conn is None:
            try:
                conn = self._connect(segment.path, create=False)
            except sqlite3.OperationalError:
                if segment.path.exists():
                    raise
                self._changed()
                if segment.path in {s.path for s in self.segments()}:
                    raise StoreError(f"journal segment {segment.path.name} is listed but its file is missing") from None
                return None
        conns[segment.path] = conn  # the latest used goes last
        open_segments = [p for p in conns if p != self.path]
        for oldest in open_segments[: max(0, len(open_segments) - OPEN_SEGMENTS)]:
            conns.pop(oldest).close()
        return conn

    def segment_path(self, first: int) -> Path:
        """The file of the segment whose first offset is ``first``."""
        return self.path.with_name(f"{self.path.stem}-{first:012d}{self.path.suffix}")

    def segments(self) -> list[Segment]:
        """The segments, oldest first: the old table's if it holds records, then the files.
        Read again only when the main file changed (its ``data_version``, which another
        connection's commit moves; this thread's own changes forget the list)."""
        main = self._main()
        version = int(main.execute("PRAGMA data_version").fetchone()[0])
        cached: tuple[int, list[Segment]] | None = getattr(self._local, "segments", None)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            rows = main.execute("SELECT first_offset, opened_at FROM segments ORDER BY first_offset").fetchall()
        except sqlite3.OperationalError:
            if not self.read_only:
                raise
            rows = []  # a journal no server has opened since segments came: all in the old table
        listed = [Segment(int(first), float(opened), self.segment_path(int(first))) for first, opened in rows]
        oldest = main.execute("SELECT min(offset) FROM journal").fetchone()[0]
        found = ([Segment(int(oldest), 0.0, None)] if oldest is not None else []) + listed
        live = {s.path for s in listed} | {self.path}
        conns = self._conns()
        for gone in [p for p in conns if p not in live]:  # dropped by retention meanwhile
            conns.pop(gone).close()
        self._local.segments = (version, found)
        return found

    def _changed(self) -> None:
        """This thread changed the main file: its next :meth:`segments` reads it again."""
        self._local.segments = None

    def _rows(self, segment: Segment, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """``sql``'s rows in ``segment``; none if retention dropped it since the list was read."""
        conn = self._conn(segment)
        if conn is None:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError:
            # dropped since the list was read (its file deleted, or being freed under an open
            # connection): no rows, as if the list had been read a moment later
            self._changed()
            if segment.path is None or segment.path in {s.path for s in self.segments()}:
                raise
            gone = self._conns().pop(segment.path, None)
            if gone is not None:
                gone.close()
            return []

    # -- appending --------------------------------------------------------------------------------

    def append(self, events: list[Event], ingested_at: float) -> list[int | None]:
        return self.append_stored([stored_event(e, self.partitions) for e in events], ingested_at)

    def append_stored(self, events: list[StoredEvent], ingested_at: float) -> list[int | None]:
        """:meth:`append` of events already in their stored form (ingest's)."""
        if self.read_only:
            raise StoreError("a read-only journal appends nothing")
        deadline = time.monotonic() + dedup_index.OPEN_WAIT_S
        while True:
            with self._writing:
                lock = self._writer_fd()
                fcntl.flock(lock, fcntl.LOCK_EX)  # waits for an appender in another process
                try:
                    offsets, written = self._append(events, ingested_at)
                    break
                except dedup_index.IndexHeld:
                    # let go of those this journal holds, so two appenders holding one each
                    # cannot wait on each other
                    self._release_indexes(set())
                    if time.monotonic() > deadline:
                        raise
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            time.sleep(HELD_RETRY_S * (1 + random.random()))  # nosec # noqa: S311 - jitter; without the lock
        if written is not None:  # long reads (searches, back-tests) must not grow its WAL without bound
            path, conn = written
            if self._wal is None or self._wal.wal != Path(f"{path}-wal"):
                self._wal = WalBound(path)
            self._wal.committed(conn)  # outside the appenders' locks: a reset may wait for readers
        return offsets

    def _writer_fd(self) -> int:
        """The lock file appenders hold (a descriptor each: the lock is the process's)."""
        if self._writer_lock is None:
            lock = self.path.with_name(self.path.name + "-writer.lock")
            self._writer_lock = os.open(private_file(lock), os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        return self._writer_lock

    def _append(
        self, events: list[StoredEvent], ingested_at: float
    ) -> tuple[list[int | None], tuple[Path, sqlite3.Connection] | None]:
        """The events' offsets, and the segment file written and this thread's connection to it."""
        segments = self.segments()
        writable, head = self._writable(segments, ingested_at)
        before = [s for s in segments if s.first < writable.first][-1:]
        self._release_indexes({writable.first, *(s.first for s in before)})
        conn = self._conn(writable)
        if conn is None:
            raise StoreError(f"journal segment {writable.path} is missing")
        path = writable.path or self.path
        self._still_there(path, self._files().get(path))
        keys = [dedup_index.key(source, event_id) for event_id, source, _, _ in events]
        index = self._index(writable)
        seen = self._holding(writable, index, keys)
        if before:
            seen |= self._held_before(before[0], events, keys)
        offsets, rows, added = self._new_rows(head + 1, events, keys, ingested_at, seen)
        if rows:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
                conn.execute(
                    "INSERT INTO newest VALUES (1, ?) ON CONFLICT (one) DO UPDATE SET ingested_at = "
                    "max(ingested_at, excluded.ingested_at)",
                    (ingested_at,),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._index_appended(index, added, rows[-1][0])
            return offsets, (path, conn)
        return offsets, None

    @staticmethod
    def _new_rows(
        first: int, events: list[StoredEvent], keys: list[bytes], ingested_at: float, seen: set[bytes]
    ) -> tuple[list[int | None], list[tuple[int, int, str, str, float, bytes]], list[bytes]]:
        """Each event's offset (None: a duplicate, of a stored record or of one before it in
        ``events``), the rows to insert from offset ``first``, and their index keys."""
        offsets: list[int | None] = []
        rows: list[tuple[int, int, str, str, float, bytes]] = []
        added: list[bytes] = []
        taken = set(seen)
        for (event_id, source, partition, body), k in zip(events, keys, strict=True):
            if k in taken:
                offsets.append(None)
                continue
            taken.add(k)
            offsets.append(first + len(rows))
            rows.append((first + len(rows), partition, source, event_id, ingested_at, body))
            added.append(k)
        return offsets, rows, added

    def _index_appended(self, index: SegmentIndex, keys: list[bytes], last: int) -> None:
        """Index the records just committed. Should that fail, they are still stored: the index
        is closed, and the next append opens it again and indexes them from the journal."""
        try:
            index.add(keys, last)
        except BaseException as error:  # rocksdict raises Exception for RocksDB's errors
            dedup_index.discard(index)
            if not isinstance(error, Exception):
                raise
            log.error("indexing appended records failed (%s); the next append indexes them again", error)

    def _index(self, segment: Segment) -> SegmentIndex:
        """The duplicate index of ``segment`` (a file without SQLite's index): opened by this
        appender and caught up with the segment's records; made again from them if it is ahead
        of them (records a power cut took from the journal, without full sync) or damaged."""
        index = self._indexes.get(segment.first)
        if index is not None and not index.closed:
            return index
        conn = self._conn(segment)
        if segment.path is None or conn is None:  # the old table has SQLite's index (_has_unique)
            raise StoreError(f"journal segment {segment.first} is missing")
        path = index_path(segment.path)
        try:
            index = dedup_index.open_index(path)
        except dedup_index.IndexDamaged as error:
            log.warning("%s; made again from its segment", error)
            index = dedup_index.rebuild(path)
        try:
            last = max(self._segment_head(conn), segment.first - 1)
            if index.covered() > last:
                log.warning("the duplicate index of %s is ahead of its segment; made again", segment.path.name)
                index = dedup_index.rebuild(index.path)
            covered = index.covered()
            if covered < last:
                records = conn.execute(
                    "SELECT offset, source, event_id FROM journal WHERE offset > ? ORDER BY offset", (covered,)
                )
                caught = index.catch_up(records, last)
                if caught:  # an append cut short between the two writes, or the index's tail lost
                    log.info("indexed %d records of %s its duplicate index lacked", caught, segment.path.name)
        except BaseException:
            dedup_index.release(index)
            raise
        self._indexes[segment.first] = index
        return index

    def _holding(self, segment: Segment, index: SegmentIndex, keys: list[bytes]) -> set[bytes]:
        """Which of ``keys`` ``segment``'s index holds. Should RocksDB fail to read it, this
        append fails and the index is closed; one RocksDB finds damaged is moved aside too, so
        the next append makes it again from the segment rather than every append failing."""
        try:
            return index.holding(keys)
        except StoreError:
            raise
        except Exception as error:  # rocksdict raises Exception for RocksDB's errors
            self._indexes.pop(segment.first, None)
            dedup_index.discard(index)
            if dedup_index.damaged(error) and self._still_listed(segment):
                log.error("the duplicate index %s is damaged (%s); made again", index.path.name, error)
                with contextlib.suppress(FileNotFoundError):
                    dedup_index.move_aside(index.path)
            raise StoreError(f"the journal's duplicate index {index.path.name} could not be read: {error}") from error

    def _release_indexes(self, keep: set[int]) -> None:
        """Let go of the indexes of segments appends no longer look in."""
        for first in [f for f in self._indexes if f not in keep]:
            dedup_index.release(self._indexes.pop(first))

    def _held_before(self, segment: Segment, events: list[StoredEvent], keys: list[bytes]) -> set[bytes]:
        """Which of ``keys`` the segment before the written one holds: none once retention
        dropped it (which it does only with a retention shorter than a span or two)."""
        try:
            if self._has_unique(segment):
                found = self._found(segment, events)
                return {
                    k for (event_id, source, _, _), k in zip(events, keys, strict=True) if (source, event_id) in found
                }
            if segment.first not in self._indexes and not self._still_listed(segment):
                return set()  # about to open its index: not if retention dropped it
            return self._holding(segment, self._index(segment), keys)
        except (StoreError, sqlite3.DatabaseError):  # dropped meanwhile, its file being freed
            if self._still_listed(segment):
                raise
            return set()

    def _still_listed(self, segment: Segment) -> bool:
        """Whether ``segment`` is listed now (the list read again: retention may have dropped it)."""
        self._changed()
        return segment in self.segments()

    def _has_unique(self, segment: Segment) -> bool:
        """Whether ``segment`` carries SQLite's duplicate index (written before dedup_index)."""
        if segment.path is None:
            return True
        known = self._unique.get(segment.path)
        if known is None:
            rows = self._rows(segment, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (_UNIQUE_NAME,))
            known = self._unique[segment.path] = bool(rows)
        return known

    def _writable(self, segments: list[Segment], ingested_at: float) -> tuple[Segment, int]:
        """The segment appends go to, and the journal's head (steady: the caller is the one
        appender): the newest file, or a new one once it has held records for ``segment_s``, or
        holds records and carries SQLite's duplicate index (or when there is none yet; an empty
        one with SQLite's index loses it). A new file is made before it is listed, so a crash
        between the two leaves a file no reader knows of, used again by the next try."""
        files = [s for s in segments if s.path is not None]
        head = self._head(segments)
        if files:
            newest = files[-1]
            empty = head < newest.first
            if empty and self._has_unique(newest):
                self._drop_unique(newest)
            if empty or (ingested_at - newest.opened_at < self.segment_s and not self._has_unique(newest)):
                return newest, head
        path = self.segment_path(head + 1)
        segment = Segment(head + 1, ingested_at, path)
        made = self._connect(path)  # 0600, before SQLite writes a byte
        made.executescript(_SEGMENT_SCHEMA)
        made.close()
        self._main().execute("INSERT OR IGNORE INTO segments VALUES (?, ?)", (segment.first, segment.opened_at))
        self._changed()
        return segment, head

    def _drop_unique(self, segment: Segment) -> None:
        """An empty segment written before dedup_index: its SQLite index goes, appends fill it."""
        conn = self._conn(segment)
        if conn is not None:
            conn.execute(f"DROP INDEX IF EXISTS {_UNIQUE_NAME}")
        if segment.path is not None:
            self._unique[segment.path] = False

    def _found(self, segment: Segment, events: list[StoredEvent]) -> set[tuple[str, str]]:
        """Which of ``events`` ``segment`` holds, by (source, event_id), through SQLite's index."""
        keys = list(dict.fromkeys((source, event_id) for event_id, source, _, _ in events))
        found: set[tuple[str, str]] = set()
        for start in range(0, len(keys), PROBE_CHUNK):
            chunk = keys[start : start + PROBE_CHUNK]
            values = ", ".join(["(?, ?)"] * len(chunk))
            rows = self._rows(
                segment,
                # the pairs drive the loop (CROSS JOIN keeps that order): a search of the
                # index each, where ``(source, event_id) IN (VALUES ...)`` scans the table
                f"SELECT j.source, j.event_id FROM (VALUES {values}) AS v CROSS JOIN journal AS j "  # nosec # noqa: S608 - placeholders only
                "ON j.source = v.column1 AND j.event_id = v.column2",
                tuple(part for key in chunk for part in key),
            )
            found.update((str(s), str(e)) for s, e in rows)
        return found

    # -- reading ----------------------------------------------------------------------------------

    def _segment_head(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT coalesce(max(offset), 0) FROM journal").fetchone()[0])

    def _head(self, segments: list[Segment]) -> int:
        files = [s for s in segments if s.path is not None]
        if files:
            conn = self._conn(files[-1])
            written = self._segment_head(conn) if conn is not None else 0
            return max(written, files[-1].first - 1)
        # no segment file yet: the old table's head, which retention may have emptied
        main = self._main()
        seq = main.execute("SELECT seq FROM sqlite_sequence WHERE name='journal'").fetchone()
        return max(int(seq[0]) if seq else 0, self._segment_head(main))

    def head(self) -> int:
        return self._head(self.segments())

    @staticmethod
    def _spans(segments: list[Segment]) -> Iterator[tuple[Segment, int | None]]:
        """Each segment with its last offset (None: the newest, still open)."""
        for i, segment in enumerate(segments):
            yield segment, segments[i + 1].first - 1 if i + 1 < len(segments) else None

    def read(self, after: int, limit: int) -> list[Record]:
        records: list[Record] = []
        for segment, last in self._spans(self.segments()):
            if last is not None and last <= after:
                continue
            rows = self._rows(
                segment,
                "SELECT offset, partition, ingested_at, body FROM journal WHERE offset > ? ORDER BY offset LIMIT ?",
                (after, limit - len(records)),
            )
            records += [Record(*row) for row in rows]
            if len(records) >= limit:
                break
            if records:
                after = records[-1].offset
        return records

    def count(self) -> int:
        return sum(int(r[0]) for s in self.segments() for r in self._rows(s, "SELECT count(*) FROM journal", ()))

    def count_after(self, after: int) -> int:
        """How many records have an offset past ``after``."""
        return sum(
            int(r[0])
            for s, last in self._spans(self.segments())
            if last is None or last > after
            for r in self._rows(s, "SELECT count(*) FROM journal WHERE offset > ?", (after,))
        )

    def get(self, offset: int) -> Record | None:
        holding = [s for s in self.segments() if s.first <= offset][-1:]
        sql = "SELECT offset, partition, ingested_at, body FROM journal WHERE offset = ?"
        rows = self._rows(holding[0], sql, (offset,)) if holding else []
        return Record(*rows[0]) if rows else None

    def lag_by_partition(self, processed_up_to: int) -> dict[int, int]:
        """Events not yet processed, per partition (every partition listed, idle ones with 0)."""
        lag = dict.fromkeys(range(self.partitions), 0)
        for segment, last in self._spans(self.segments()):
            if last is not None and last <= processed_up_to:
                continue
            sql = "SELECT partition, count(*) FROM journal WHERE offset > ? GROUP BY partition"
            for p, n in self._rows(segment, sql, (processed_up_to,)):
                lag[int(p)] = lag.get(int(p), 0) + int(n)
        return lag

    def recent_of_customer(self, customer_id: str, limit: int, scan: int) -> tuple[list[Record], int]:
        """The newest ``limit`` events of ``customer_id`` among the latest ``scan`` offsets,
        newest first, and the lowest offset searched.

        No index on the customer (it would slow every append): the bounded scan reads one
        partition's rows. The exact test of the envelope's ``customer_id`` is in the WHERE clause,
        before the LIMIT, so other events of the partition (even ones whose data hold a nested
        ``"customer_id"`` with this value) never push the customer's own out of the answer. The
        ``instr`` test is only a fast pre-filter; the body is cast to text so no SQLite version
        reads it as binary JSON.
        """
        segments = self.segments()
        lowest = max(0, self._head(segments) - scan) + 1
        needle = b'"customer_id":' + msgspec.json.encode(customer_id)
        partition = partition_of_key(customer_id, self.partitions)
        found: list[Record] = []
        for segment, last in reversed(list(self._spans(segments))):
            if len(found) >= limit or (last is not None and last < lowest):
                break
            rows = self._rows(
                segment,
                "SELECT offset, partition, ingested_at, body FROM journal "
                "WHERE offset >= ? AND partition = ? AND instr(body, ?) > 0 "
                "AND json_extract(CAST(body AS TEXT), '$.customer_id') = ? ORDER BY offset DESC LIMIT ?",
                (lowest, partition, needle, customer_id, limit - len(found)),
            )
            found += [Record(*row) for row in rows]
        return found, lowest

    # -- retention --------------------------------------------------------------------------------

    def delete_older_than(self, ingested_before: float, processed_up_to: int, max_rows: int) -> int:
        """Retention: drop the oldest segments (never the newest) whose records are all processed
        and ingested before the cut-off, until ``max_rows`` records or :data:`DROPS_PER_CALL`
        segments went, then a slice of up to ``max_rows`` of the old table's rows
        (:func:`ringfence.store.retention.delete_oldest`). Returns how many records went, and at
        least ``max_rows`` when another segment may go: fewer, none is left to drop."""
        if self.read_only:
            raise StoreError("a read-only journal deletes nothing")
        dropped, drops, capped = 0, 0, False
        segments = self.segments()
        for segment, last in self._spans(segments):
            if segment.path is None:
                continue
            if last is None or last > processed_up_to or not self._all_before(segment, ingested_before):
                break
            if drops == DROPS_PER_CALL or dropped >= max_rows:
                capped = True  # one more may go: say so, however few records went
                break
            self._drop(segment.first, segment.path)
            dropped, drops = dropped + last - segment.first + 1, drops + 1
        self._sweep(segments)
        legacy = delete_oldest(self._main(), "journal", ingested_before, processed_up_to, max_rows)
        self._changed()
        return max(dropped + legacy, max_rows) if capped else dropped + legacy

    def _all_before(self, segment: Segment, cut_off: float) -> bool:
        rows = self._rows(segment, "SELECT ingested_at FROM newest", ())
        return not rows or float(rows[0][0]) < cut_off

    def _drop(self, first: int, path: Path) -> None:
        """Unlist the segment from ``first``, then delete its files off the caller's thread
        (freeing an hour of records takes seconds): a crash between leaves files no reader
        lists, which a later sweep deletes."""
        self._main().execute("DELETE FROM segments WHERE first_offset = ?", (first,))
        self._changed()
        conn = self._conns().pop(path, None)
        if conn is not None:
            conn.close()
        index = index_path(path)
        # an appender of this process lets go; one in another process no longer searches it
        # once it reads the list again (its reads until then may fail as the files are freed,
        # and are taken for nothing held: _held_before)
        dedup_index.close_path(index)
        self._freer.delete(path)
        self._freer.delete(index)

    def settle(self) -> None:
        """Wait until the files of dropped segments are deleted."""
        self._freer.settle()

    def _sweep(self, segments: list[Segment]) -> None:
        """Delete segment files and indexes older than every listed one (a drop a crash cut
        short). A file newer than the oldest listed may be one an append is making, so it is left
        alone."""
        files = [s for s in segments if s.path is not None]
        if not files:
            return
        for found in self.path.parent.glob(f"{self.path.stem}-*"):
            index = self._index_name.fullmatch(found.name)
            if index is not None:
                if index[2] is not None or int(index[1]) < files[0].first:  # moved aside, or dropped
                    dedup_index.close_path(found)
                    self._freer.delete(found)
                continue
            named = self._segment_name.fullmatch(found.name)
            if named is None or int(named[1]) >= files[0].first:
                continue
            if named[2] is None:
                self._freer.delete(found)  # paced, as any drop; once, if one is under way
            elif not found.with_name(found.name.removesuffix(named[2])).exists():
                with contextlib.suppress(FileNotFoundError):  # a -wal or -shm its file went without
                    found.unlink()

    def close(self) -> None:
        """Close this thread's files, the writer's lock and the duplicate indexes it holds;
        deletions under way finish at once."""
        conns = self._conns()
        for conn in conns.values():
            conn.close()
        conns.clear()
        self._changed()
        with self._writing:
            self._release_indexes(set())
            if self._writer_lock is not None:
                os.close(self._writer_lock)
                self._writer_lock = None
        self._freer.hurry.set()


class _Freer:
    """Deletes dropped segments' files and duplicate indexes on a daemon thread of its own
    (:func:`_delete`), each once, in order; a failure is logged, and the next sweep tries again."""

    def __init__(self) -> None:
        self.hurry = threading.Event()  # set: free what is left at once (closing)
        self._queue: queue.Queue[Path] = queue.Queue()
        self._pending: set[Path] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def delete(self, path: Path) -> None:
        with self._lock:
            if path in self._pending:
                return
            self._pending.add(path)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ringfence-journal-free", daemon=True)
                self._thread.start()
        self._queue.put(path)

    def settle(self) -> None:
        """Wait until every file handed over is deleted (or its deletion failed)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            try:
                _delete(path, self.hurry)
            except OSError as error:
                log.warning("deleting dropped journal file %s failed (%s); retention tries again", path.name, error)
            finally:
                with self._lock:
                    self._pending.discard(path)
                self._queue.task_done()


def _unlink(path: Path) -> None:
    """A database file and its -wal and -shm files, at once (a sweep's leftovers)."""
    for name in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            name.unlink()


def _delete(path: Path, closing: threading.Event) -> None:
    """Delete a dropped segment's file or duplicate index (a directory: each file, then the
    directory), blocks freed a step at a time (see :func:`_delete_file`). A link in its place is
    only unlinked: what it points at is not the journal's (one planted there had the sweep empty
    a directory elsewhere)."""
    try:
        is_dir = stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return
    if not is_dir:
        _delete_file(path, closing)
        return
    for found in sorted(path.iterdir()):
        _delete_file(found, closing)
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()  # not empty (a file made meanwhile): an OSError, and the next sweep tries again


def _delete_file(path: Path, closing: threading.Event) -> None:
    """Delete a dropped segment's file (or one of its index's), its blocks freed a step at a
    time (see :data:`FREE_STEP_BYTES`). The name goes first, so no connection can open it again;
    a connection still open reads what it has cached, or errors, which :meth:`SqliteLog._rows`
    (and ``_held_before``, for an index) takes for no rows. A crash part-way leaves an unlinked
    file the kernel frees, or -wal and -shm files (or an index's other files) the sweep deletes."""
    try:
        # O_NOFOLLOW and O_NONBLOCK: a link or a FIFO in its place is not opened, only unlinked
        fd: int | None = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # gone, a link (ELOOP), a FIFO without a reader, a directory
        fd = None
    if fd is not None:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # another name still reaches it: not ours to empty
            os.close(fd)
            fd = None
    try:
        _unlink(path)
        if fd is None:
            return
        size = os.fstat(fd).st_size
        while size > 0 and not closing.is_set():
            size = max(0, size - FREE_STEP_BYTES)
            os.ftruncate(fd, size)
            closing.wait(FREE_PAUSE_S)
    finally:
        if fd is not None:
            os.close(fd)


def _has_meta(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is not None
