"""The embedded journal's append as one segment fills: events of a fixed body with random UUIDs
(or counting ids) for event ids, 2,000 an append, the segment never rolled over; CPU and wall
time an event for each million, so the cost of the duplicate index on (source, event_id) can be
read as it grows towards an hour of the reference load (35 million records).

    .venv/bin/python benchmarks/journal_index_growth.py --records 12000000 --event-ids uuid

Writes about 0.4 GB a million records under ``--dir`` (a temporary folder by default), and
deletes it after. Each line of output is one million records; the last line is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from ringfence.runtimes.embedded.journal import SqliteLog

BATCH = 2_000
BLOCK = 1_000_000
NOW = 1_795_000_000.0
BODY = (
    b'{"event_id":"x","type":"card.authorization","occurred_at":"2026-12-03T10:00:00Z",'
    b'"source":"card-processor","data":{"card_id":"tok_d7257c4921b1","amount":"4.83","currency":"EUR",'
    b'"merchant":{"id":"mer_14205","mcc":"5912","country":"PT"},"channel":"pos","approved":true},'
    b'"customer_id":"cus_0372054"}'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=12_000_000)
    parser.add_argument("--event-ids", choices=("uuid", "sequential"), default="uuid")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        log = SqliteLog(Path(tmp) / "journal.sqlite3", 8, cache_mib=64, segment_s=1e12)  # the ingest worker's cache
        blocks, counter = [], 0
        for _ in range(args.records // BLOCK):
            ids = [_ids(args.event_ids, counter + start) for start in range(0, BLOCK, BATCH)]
            counter += BLOCK
            cpu, wall = time.process_time(), time.perf_counter()
            for batch in ids:  # the ids are made before the clock starts
                log.append_stored([(event_id, "card-processor", 3, BODY) for event_id in batch], NOW)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            block = {"records": counter, "cpu_us": round(cpu / BLOCK * 1e6, 2), "wall_us": round(wall / BLOCK * 1e6, 2)}
            blocks.append(block)
            print(json.dumps(block), flush=True)
        log.close()
    print(json.dumps({"event_ids": args.event_ids, "records": counter, "per_million": blocks}))


def _ids(kind: str, first: int) -> list[str]:
    if kind == "uuid":
        return [str(uuid.uuid4()) for _ in range(BATCH)]
    return [f"bench1-{first + i:012d}" for i in range(BATCH)]


if __name__ == "__main__":
    main()
