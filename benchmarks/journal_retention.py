"""The embedded journal's retention: what deleting a minute of the reference load's records
(582,000 at 9,700 a second) costs, three ways, and what a round with nothing to delete costs:

- ``statement``: one ``DELETE ... WHERE ingested_at < ?`` (before item 10 of
  docs/performance.md): it scans the table, and deletes a minute in one statement holding the
  journal's write lock from ingest;
- ``slices``: slices of ``RETENTION_ROWS`` up to an offset found by a binary search (item 10;
  still how a journal written before segments is drained): each row also leaves the random-key
  duplicate index, a page written and fsync'd for almost every record;
- ``segments``: the journal now, in segment files each spanning ``--segment-s`` of ingest
  (the default span is an hour; a minute here, so a minute of records is one segment): a
  round unlists the old segment, and its file is deleted on a thread of its own (the time
  that takes is reported apart: the file system's, not the processor's).

Both journals hold ``--records`` records with random event ids (as producers send: UUIDs).

    .venv/bin/python benchmarks/journal_retention.py --records 2000000 --runs 3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ringfence.events.model import Event
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.processor import RETENTION_ROWS
from ringfence.store.connection import connect

RATE = 9_700.0  # records a second, the reference load: ingested_at advances 1/RATE a record
START = 1_000.0
MINUTE = 60.0
BATCH = 2_000  # events an append, as the ingest worker's group commits take them
PARTITIONS = 8


def events(records: int) -> list[Event]:
    """About a simulator event's stored size (400 bytes), with random event ids."""
    ids = random.Random(7)
    pad = "x" * 300
    return [
        Event(f"{ids.getrandbits(128):032x}", "balance.updated", START, "bench", {"pad": pad}, f"cus_{i % 100_000}")
        for i in range(records)
    ]


def build_rows(path: Path, records: list[Event]) -> None:
    """A journal as written before segments: every record a row of the main file."""
    SqliteLog(path, PARTITIONS).close()  # the main file's schema, which holds that table
    conn = connect(path)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO journal (partition, source, event_id, ingested_at, body) VALUES (?, ?, ?, ?, ?)",
        ((i % PARTITIONS, e.source, e.event_id, START + i / RATE, b"x" * 400) for i, e in enumerate(records)),
    )
    conn.execute("COMMIT")
    conn.close()


def build_segments(path: Path, records: list[Event], segment_s: float) -> int:
    """The journal now, appended in batches as ingest does; returns its segment count."""
    log = SqliteLog(path, PARTITIONS, segment_s=segment_s)
    for start in range(0, len(records), BATCH):
        log.append(records[start : start + BATCH], START + start / RATE)
    count = len(log.segments())
    log.close()
    return count


def copy(source: Path, target: Path) -> None:
    """A fresh copy to run a round on, on disk before the clock starts (its dirty pages would
    otherwise be written out by the round's first fsync)."""
    shutil.copytree(source, target)
    os.sync()


def statement_round(path: Path, before: float, records: int) -> tuple[float, int]:
    conn = connect(path)
    started = time.perf_counter()
    deleted = conn.execute("DELETE FROM journal WHERE ingested_at < ? AND offset <= ?", (before, records)).rowcount
    conn.close()
    return time.perf_counter() - started, deleted


def sliced_round(path: Path, before: float, records: int, segment_s: float) -> tuple[float, list[float], int, float]:
    """The whole round's time on the caller's thread, each call's, the records deleted (the
    processor's loop), and the time a dropped segment's files then took to go (its own thread)."""
    log = SqliteLog(path, PARTITIONS, segment_s=segment_s)
    started, calls, deleted = time.perf_counter(), [], 0
    while True:
        t = time.perf_counter()
        n = log.delete_older_than(before, records, RETENTION_ROWS)
        calls.append(time.perf_counter() - t)
        deleted += n
        if n < RETENTION_ROWS:
            break
    took = time.perf_counter() - started
    log.settle()
    files = time.perf_counter() - started - took
    log.close()
    return took, calls, deleted, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--segment-s", type=float, default=MINUTE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    deleted: dict[str, int] = {}

    def add(name: str, seconds: float) -> None:
        figures.setdefault(name, []).append(round(seconds * 1e3, 2))

    records = events(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        rows, segmented = Path(tmp) / "rows" / "journal.sqlite3", Path(tmp) / "segments" / "journal.sqlite3"
        rows.parent.mkdir()
        segmented.parent.mkdir()
        build_rows(rows, records)
        segments = build_segments(segmented, records, args.segment_s)
        cut = START + MINUTE
        for _ in range(args.runs):
            work = Path(tmp) / "work"
            copy(rows.parent, work)
            add(
                "statement: a round with nothing to delete, ms",
                statement_round(work / rows.name, START, args.records)[0],
            )
            took, deleted["statement"] = statement_round(work / rows.name, cut, args.records)
            add("statement: a minute of records, ms", took)
            shutil.rmtree(work)
            for how, source in (("slices", rows), ("segments", segmented)):
                copy(source.parent, work)
                add(
                    f"{how}: a round with nothing to delete, ms",
                    sliced_round(work / source.name, START, args.records, args.segment_s)[0],
                )
                took, calls, deleted[how], files = sliced_round(work / source.name, cut, args.records, args.segment_s)
                add(f"{how}: a minute of records, the whole round, ms", took)
                add(f"{how}: a minute of records, the longest call, ms", max(calls))
                if how == "segments":
                    add(f"{how}: a minute of records, its files deleted after the round (another thread), ms", files)
                shutil.rmtree(work)
    result: dict[str, Any] = {
        "records": args.records,
        "minute_of_records": int(MINUTE * RATE),
        "slice_rows": RETENTION_ROWS,
        "segment_s": args.segment_s,
        "segments": segments,
        "records_deleted": deleted,
        "runs": args.runs,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "figures": {
            name: {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v}
            for name, v in figures.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "journal-retention.json"
    out.write_text(json.dumps(result, indent=1))
    for name, f in result["figures"].items():
        print(f"{name}: {f['median']} ({f['min']}-{f['max']})")
    print(f"records deleted by a round: {deleted}; {segments} segments")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
