"""The embedded journal's retention: one round's cost with a journal of N records, and a
minute of the reference load's records (582,000) deleted, as the processor does it now (slices
of ``RETENTION_ROWS`` found by a binary search on the offset) and as it did before (one
``DELETE ... WHERE ingested_at < ?``, which scans the table and, once records are old, deletes
a minute of them in one statement holding the journal's write lock from ingest).

    .venv/bin/python benchmarks/journal_retention.py --records 2000000 --runs 3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.processor import RETENTION_ROWS
from ringfence.store.connection import connect

RATE = 9_700.0  # records a second, the reference load: ingested_at advances 1/RATE a record
START = 1_000.0
MINUTE = 60.0


def build(path: Path, records: int) -> None:
    SqliteLog(path, partitions=8).close()  # the journal's own schema
    conn = connect(path)
    body = b"x" * 400  # about a simulator event's stored size
    ids = random.Random(7)  # producers' event ids are random (UUIDs): so is the unique index's order
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO journal (partition, source, event_id, ingested_at, body) VALUES (?, ?, ?, ?, ?)",
        ((i % 8, "bench", f"{ids.getrandbits(128):032x}", START + i / RATE, body) for i in range(records)),
    )
    conn.execute("COMMIT")
    conn.close()


def old_round(path: Path, before: float, records: int) -> tuple[float, int]:
    conn = connect(path)
    started = time.perf_counter()
    deleted = conn.execute("DELETE FROM journal WHERE ingested_at < ? AND offset <= ?", (before, records)).rowcount
    conn.close()
    return time.perf_counter() - started, deleted


def new_round(path: Path, before: float, records: int) -> tuple[float, list[float]]:
    """The whole round's time, and each slice's."""
    log = SqliteLog(path, partitions=8)
    started, slices = time.perf_counter(), []
    while True:
        t = time.perf_counter()
        n = log.delete_older_than(before, records, RETENTION_ROWS)
        slices.append(time.perf_counter() - t)
        if n < RETENTION_ROWS:
            break
    log.close()
    return time.perf_counter() - started, slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(round(value * 1e3, 2))

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.sqlite3"
        build(base, args.records)
        for _ in range(args.runs):
            for how in ("old", "new"):
                path = Path(tmp) / f"{how}.sqlite3"
                shutil.copy(base, path)
                if how == "old":  # nothing old yet, then a minute of records old
                    add("old: a round with nothing to delete, ms", old_round(path, START, args.records)[0])
                    add("old: a minute of records, one statement, ms", old_round(path, START + MINUTE, args.records)[0])
                else:
                    add("new: a round with nothing to delete, ms", new_round(path, START, args.records)[0])
                    took, slices = new_round(path, START + MINUTE, args.records)
                    add("new: a minute of records, all slices, ms", took)
                    add("new: a minute of records, the median slice, ms", statistics.median(slices))
                    add("new: a minute of records, the longest slice (the first), ms", max(slices))
                path.unlink()
    result: dict[str, Any] = {
        "records": args.records,
        "minute_of_records": int(MINUTE * RATE),
        "slice_rows": RETENTION_ROWS,
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
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
