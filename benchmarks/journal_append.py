"""The embedded journal's append, as the ingest worker calls it: simulator events (100,000
customers), validated up front, appended in batches of 2,000 to a fresh journal whose ingest
time advances at the reference load (9,700 events a second). Reports µs of CPU and of wall
time an appended event, the commits' fsyncs included, and how many segments the journal ended
with. ``--segment-s`` sets the span (its default is the journal's); ``--records`` is the
journal's size at the end: past a span, appends also look the batch up in the segment before.
``--event-ids uuid`` (the default) names the events as producers following the event contract
do, with random UUIDs; ``sequential`` keeps the simulator's ids, which count up, so the
duplicate index on (source, event_id) is only ever appended to.

Compare two versions of the code by running this file with each on ``PYTHONPATH``:

    .venv/bin/python benchmarks/journal_append.py --records 400000 --runs 3
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/journal_append.py --records 400000 --runs 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import msgspec

from ringfence.events.decode import validate_event
from ringfence.runtimes.embedded import journal
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.simulate import Traffic

RATE = 9_700.0
BATCH = 2_000
START = 1_795_000_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--segment-s", type=float, default=getattr(journal, "SEGMENT_S", 3600.0))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--event-ids", choices=("uuid", "sequential"), default="uuid")
    args = parser.parse_args()
    traffic = Traffic(seed=1, customers=100_000, source_prefix="append")
    now = START + args.records / RATE
    events = [
        validate_event(msgspec.json.encode(e), now)
        for e in traffic.stream(start=START, rate_per_s=RATE, count=args.records)
    ]
    if args.event_ids == "uuid":
        events = [msgspec.structs.replace(e, event_id=_uuid_of(e.event_id)) for e in events]
    options = {"segment_s": args.segment_s} if hasattr(journal, "SEGMENT_S") else {}  # older code: one table
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            log = SqliteLog(Path(tmp) / "journal.sqlite3", 8, cache_mib=64, **options)  # the ingest worker's cache
            cpu, wall = time.process_time(), time.perf_counter()
            for start in range(0, len(events), BATCH):
                log.append(events[start : start + BATCH], START + start / RATE)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            segments = len(log.segments()) if hasattr(log, "segments") else 1
            log.close()
        runs.append({"cpu_us": cpu / len(events) * 1e6, "wall_us": wall / len(events) * 1e6, "segments": segments})
    summary = {
        "code": journal.__file__,
        "records": args.records,
        "segment_s": args.segment_s,
        "event_ids": args.event_ids,
        "cpu_us_per_record": statistics.median(r["cpu_us"] for r in runs),
        "wall_us_per_record": statistics.median(r["wall_us"] for r in runs),
        "runs": runs,
    }
    print(json.dumps(summary, indent=1))


def _uuid_of(event_id: str) -> str:
    """As ``ringfence.bench.e2e.uuid_of``, written out so this file runs against older code too."""
    return str(uuid.UUID(bytes=hashlib.blake2b(event_id.encode(), digest_size=16).digest(), version=4))


if __name__ == "__main__":
    main()
