"""A journal as Ringfence wrote it before segment files: every record in the main file. Its schema
is that version's, written out here rather than taken from the journal module, which moves on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ringfence.events.model import Event, encode_event
from ringfence.log.base import partition_for

LEGACY_SCHEMA = """
CREATE TABLE journal (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    partition INTEGER NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX journal_event_id ON journal (source, event_id);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def write_legacy_journal(path: Path, partitions: int, events: list[tuple[Event, float]]) -> None:
    """``events`` (each with its ingest time) at offsets 1, 2, ... in the old layout."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(LEGACY_SCHEMA)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('partitions', ?)", (str(partitions),))
    conn.executemany(
        "INSERT INTO journal (partition, source, event_id, ingested_at, body) VALUES (?, ?, ?, ?, ?)",
        [(partition_for(e, partitions), e.source, e.event_id, at, encode_event(e)) for e, at in events],
    )
    conn.commit()
    conn.close()


def append_batches(path: str, first: int, last: int, prefix: str, acked: str, segment_s: float) -> None:
    """In a child process: append batches ``first``..``last`` (10 events each, ids
    ``<prefix>-<batch>-<n>``) one at a time, each with the wall clock's ingest time, and write
    each batch's number to ``acked`` once its append returned (the producer's acknowledgement);
    a batch refused while another writer has the duplicate index open is sent again."""
    import time

    from ringfence.runtimes.embedded.dedup_index import IndexHeld
    from ringfence.runtimes.embedded.journal import SqliteLog
    from tests.helpers.factories import ev

    log = SqliteLog(Path(path), 2, segment_s=segment_s)
    with open(acked, "a", encoding="utf-8") as out:
        for batch in range(first, last + 1):
            while True:
                try:
                    log.append([ev(event_id=f"{prefix}-{batch}-{n}") for n in range(10)], time.time())
                    break
                except IndexHeld:  # another writer has the duplicate index open: a 503, sent again
                    time.sleep(0.05)
            out.write(f"{batch}\n")
            out.flush()
