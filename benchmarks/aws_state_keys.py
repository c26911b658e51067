"""What a chunk of events reads and may write on the aws runtime, in state rows (a row a
state, the layout before 2026-12-03) and in keys (an item a key): the reason for the layout;
and how large a key's item grows with a customer's history. No AWS endpoint needed: the
planner the processor uses (``Engine.state_rows_of``) over the traffic file of ``ringfence
bench --sustained`` (1,000,000 customers), and the engine over simulated traffic of a few
customers, its states encoded as the state table stores them.

    .venv/bin/python benchmarks/aws_state_keys.py TRAFFIC.ndjson --events 30000 --chunk 10 \\
        --out benchmarks/results/aws-state-keys.json
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import msgspec

from ringfence.engine.engine import Engine
from ringfence.engine.pack import default_pack_text, load_pack
from ringfence.events.decode import decode_batch
from ringfence.simulate import Traffic


def item_sizes(customers: int, events: int) -> dict[str, float]:
    """Customers' items after ``events`` simulated events from ``customers``: bytes as stored
    (a state's name, state, deadline and expiry), and with 8-byte names instead."""
    traffic = Traffic(seed=3, customers=customers, fraud_rate=0.01, source_prefix="sizes")
    raw = list(traffic.stream(start=time.time() - 3 * 86400, rate_per_s=events / (3 * 86400), count=events))
    engine = Engine(load_pack(default_pack_text()))
    decoded = decode_batch(msgspec.json.encode(raw), ndjson=False, now=time.time(), max_events=events)
    for i, e in enumerate(decoded.events):
        engine.process(e, i, 0, e.occurred_at)
    items: dict[str, dict[str, tuple[bytes, None, int, int]]] = defaultdict(dict)
    for name, key, state in engine.take_changes():
        own = key.startswith("cus_") and "\x1f" not in key  # a customer's key, not one with a payee's, say
        if state is not None and not engine.is_heartbeat(name) and own:
            items[key][name] = (state, None, 1_800_000_000, 1_800_000_000)  # as stored: with its times
    named = [len(msgspec.msgpack.encode(states)) for states in items.values()]
    short = [
        len(msgspec.msgpack.encode({hashlib.sha256(n.encode()).digest()[:8]: s for n, s in states.items()}))
        for states in items.values()
    ]
    return {
        "customers": len(items),
        "events_a_customer": events / customers,
        "median_bytes": statistics.median(named),
        "p90_bytes": statistics.quantiles(named, n=10)[-1],
        "max_bytes": max(named),
        "over_1kb": sum(size > 1024 for size in named),
        "p90_bytes_8_byte_names": statistics.quantiles(short, n=10)[-1],
        "over_1kb_8_byte_names": sum(size > 1024 for size in short),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traffic", type=Path, help="NDJSON events, as ringfence bench --traffic-dir keeps them")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--chunk", type=int, default=10, help="events a chunk (a transaction) holds")
    parser.add_argument("--sizes", default="50x10000", help="CUSTOMERSxEVENTS for the items' sizes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    with args.traffic.open("rb") as f:
        body = b"".join(itertools.islice(f, args.events))
    events = decode_batch(body, ndjson=True, now=4e9, max_events=args.events).events
    planner = Engine(load_pack(default_pack_text()))
    totals = dict.fromkeys(("rows_read", "keys_read", "rows_written", "keys_written"), 0)
    for start in range(0, len(events), args.chunk):
        reads: set[tuple[str, str]] = set()
        writes: set[tuple[str, str]] = set()
        for event in events[start : start + args.chunk]:
            r, w = planner.state_rows_of(event)
            reads |= r
            writes |= w
        totals["rows_read"] += len(reads)
        totals["keys_read"] += len({key for _, key in reads})
        totals["rows_written"] += len(writes)  # may write: a superset of what changes
        totals["keys_written"] += len({key for _, key in writes})
    result = {
        "command": f"benchmarks/aws_state_keys.py TRAFFIC --events {args.events} --chunk {args.chunk}"
        f" --sizes {args.sizes}",
        "traffic": args.traffic.name,
        "events": len(events),
        "per_event": {k: round(v / len(events), 2) for k, v in totals.items()},
        "customer_items": item_sizes(*map(int, args.sizes.split("x"))),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
