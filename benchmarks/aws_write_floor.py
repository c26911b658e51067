"""The fewest DynamoDB write units an event any layout of an item a key could cost on the
traffic of ``benchmarks/aws_local.py``, and what a log of each chunk's changed states would.

No AWS endpoint needed: the engine over the same simulated traffic (the same seeds, customers,
rate and count, from a fixed time rather than an hour ago), its changes taken after each event.

- **An item a key, written once**: every key whose states change in the whole run, its item
  written once, at the end, outside any transaction, and under 1 KB: one write unit a key. No
  layout that keeps a key's states in an item of its own can write less (a key changed is
  written at least once), so its units an event are the keys changed over the events.
- **A log of changes**: each chunk's changed states (name, key, state) as one compressed
  record, in the chunk's transaction (2 units a KB): what a shard's state held in memory and
  made durable as a log, with snapshots elsewhere, would write.

    .venv/bin/python benchmarks/aws_write_floor.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import zlib
from pathlib import Path

import msgspec

from ringfence.engine.engine import Engine
from ringfence.engine.pack import default_pack_text, load_pack
from ringfence.events.decode import decode_batch
from ringfence.runtimes.aws.platform import partition_key
from ringfence.simulate import Traffic

START = 1_800_000_000.0  # aws_local.py's traffic starts an hour ago; a fixed start repeats the same events


def one_seed(seed: int, customers: int, count: int, chunk: int) -> dict[str, float]:
    traffic = Traffic(seed=seed, customers=customers, fraud_rate=0.01, source_prefix="bench")
    raw = list(traffic.stream(start=START, rate_per_s=50.0, count=count))
    events = decode_batch(msgspec.json.encode(raw), ndjson=False, now=START + 3600, max_events=count).events
    engine = Engine(load_pack(default_pack_text()))
    changed: set[str] = set()
    owned: set[str] = set()  # keys holding their event's partition key (its customer): one shard writes them
    log_units = 0
    log_bytes = 0
    for start in range(0, len(events), chunk):
        states: dict[tuple[str, str], bytes | None] = {}
        for i, event in enumerate(events[start : start + chunk], start):
            engine.process(event, i, 0, event.occurred_at)
            own = partition_key(event)
            for name, key, state in engine.take_changes():
                changed.add(key)
                if own in key.split("\x1f"):
                    owned.add(key)
                states[(name, key)] = state
        entry = zlib.compress(msgspec.msgpack.encode([(n, k, s) for (n, k), s in states.items()]))
        log_bytes += len(entry)
        log_units += 2 * math.ceil(len(entry) / 1024)
    n = len(events)
    return {
        "events": n,
        "keys_changed": len(changed),
        "keys_changed_per_event": round(len(changed) / n, 3),
        "of_which_hold_the_partition_key": round(len(owned) / n, 3),
        "log_bytes_per_event": round(log_bytes / n, 1),
        "log_write_units_per_event": round(log_units / n, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="seeds, as aws_local.py's runs (100, 101, ...)")
    parser.add_argument("--chunk", type=int, default=23, help="events a chunk: aws_local.py's chunks held about 23")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = [one_seed(100 + i, args.customers, args.events, args.chunk) for i in range(args.runs)]
    result = {
        "command": f"benchmarks/aws_write_floor.py --events {args.events} --customers {args.customers} "
        f"--runs {args.runs} --chunk {args.chunk}",
        "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "aws-write-floor.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
