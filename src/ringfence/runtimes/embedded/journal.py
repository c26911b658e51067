"""The embedded runtime's log: an append-only SQLite journal in the data dir.

Offsets are an ``AUTOINCREMENT`` integer key, so appends go to the end of the B-tree and
are never reused after retention deletes. Duplicates are found through a unique index
on (source, event_id): the producer's retry of an acknowledged event is reported, not stored,
and consumes no offset, so offsets are dense and ``head - processed`` is the exact lag.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import msgspec

from ringfence.errors import StoreError
from ringfence.events.model import Event, encode_event
from ringfence.log.base import Record, partition_for, partition_of_key
from ringfence.store.connection import connect
from ringfence.store.retention import delete_oldest

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    partition INTEGER NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS journal_event_id ON journal (source, event_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SqliteLog:
    """A partitioned journal in one SQLite file. Thread-safe: one connection per thread."""

    def __init__(self, path: Path, partitions: int, synchronous: str = "full", cache_mib: int = 2) -> None:
        self.path = path
        self._synchronous = synchronous
        self._cache_mib = cache_mib
        self._local = threading.local()
        conn = self._conn()
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('partitions', ?)", (str(partitions),))
        stored = int(conn.execute("SELECT value FROM meta WHERE key='partitions'").fetchone()[0])
        if stored != partitions:
            raise StoreError(
                f"journal {path} was created with {stored} partitions; "
                f"start with partitions={stored} or use a new data dir"
            )
        self.partitions = partitions

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self._synchronous, self._cache_mib)
            self._local.conn = conn
        return conn

    def append(self, events: list[Event], ingested_at: float) -> list[int | None]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            offsets = self._append_all_new(conn, events, ingested_at)
            if offsets is None:  # a duplicate among them: start over, one event at a time
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                offsets = self._append_each(conn, events, ingested_at)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return offsets

    def _append_all_new(
        self, conn: sqlite3.Connection, events: list[Event], ingested_at: float
    ) -> list[int | None] | None:
        """Nearly every batch holds no duplicate: its rows go in with one statement at the
        offsets after the head, which is half the CPU of a statement per event. None if an
        event was a duplicate (of another in the batch, or skipped by the unique index): the
        caller rolls back, so no offset is skipped."""
        first = self.head() + 1
        rows: list[tuple[int, int, str, str, float, bytes]] = []
        keys: set[tuple[str, str]] = set()
        for event in events:
            key = (event.source, event.event_id)
            if key in keys:
                return None
            keys.add(key)
            rows.append((first + len(rows), *self._row(event, ingested_at)))
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO journal (offset, partition, source, event_id, ingested_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        if conn.total_changes - before != len(rows):
            return None
        return [*range(first, first + len(rows))]

    def _append_each(self, conn: sqlite3.Connection, events: list[Event], ingested_at: float) -> list[int | None]:
        offsets: list[int | None] = []
        for event in events:
            # NOT EXISTS rather than OR IGNORE: a refused insert must not consume an offset
            cur = conn.execute(
                "INSERT INTO journal (partition, source, event_id, ingested_at, body) "
                "SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM journal WHERE source = ? AND event_id = ?)",
                (*self._row(event, ingested_at), event.source, event.event_id),
            )
            offsets.append(cur.lastrowid if cur.rowcount == 1 else None)
        return offsets

    def _row(self, event: Event, ingested_at: float) -> tuple[int, str, str, float, bytes]:
        """An event's columns after its offset: partition, source, event id, ingested_at, body."""
        return partition_for(event, self.partitions), event.source, event.event_id, ingested_at, encode_event(event)

    def read(self, after: int, limit: int) -> list[Record]:
        rows = self._conn().execute(
            "SELECT offset, partition, ingested_at, body FROM journal WHERE offset > ? ORDER BY offset LIMIT ?",
            (after, limit),
        )
        return [Record(*row) for row in rows]

    def head(self) -> int:
        row = self._conn().execute("SELECT seq FROM sqlite_sequence WHERE name='journal'").fetchone()
        return int(row[0]) if row else 0

    def count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM journal").fetchone()[0])

    def get(self, offset: int) -> Record | None:
        row = (
            self._conn()
            .execute("SELECT offset, partition, ingested_at, body FROM journal WHERE offset = ?", (offset,))
            .fetchone()
        )
        return Record(*row) if row else None

    def lag_by_partition(self, processed_up_to: int) -> dict[int, int]:
        """Events not yet processed, per partition (every partition listed, idle ones with 0)."""
        lag = dict.fromkeys(range(self.partitions), 0)
        rows = self._conn().execute(
            "SELECT partition, count(*) FROM journal WHERE offset > ? GROUP BY partition", (processed_up_to,)
        )
        lag.update((int(p), int(n)) for p, n in rows)
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
        lowest = max(0, self.head() - scan) + 1
        needle = b'"customer_id":' + msgspec.json.encode(customer_id)
        rows = self._conn().execute(
            "SELECT offset, partition, ingested_at, body FROM journal "
            "WHERE offset >= ? AND partition = ? AND instr(body, ?) > 0 "
            "AND json_extract(CAST(body AS TEXT), '$.customer_id') = ? ORDER BY offset DESC LIMIT ?",
            (lowest, partition_of_key(customer_id, self.partitions), needle, customer_id, limit),
        )
        return [Record(*row) for row in rows], lowest

    def delete_older_than(self, ingested_before: float, processed_up_to: int, max_rows: int) -> int:
        """Retention, a slice at a time: see :func:`ringfence.store.retention.delete_oldest`."""
        return delete_oldest(self._conn(), "journal", ingested_before, processed_up_to, max_rows)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
