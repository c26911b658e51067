"""Bytes of the packed state rows the processor commits (``ringfence.engine.packed``): the
compiled core's version 2 against the same rows in version 1, for the changelog (the rows each
batch of 2,000 events changed) and for a snapshot of the state those events leave.

The events are the first of the sustained benchmark's traffic (``ringfence bench --sustained``'s file,
made here when missing), validated before the clock starts; the engine is the compiled core.

    .venv/bin/python benchmarks/packed_rows.py --events 300000 --traffic-dir /tmp/rf-traffic
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import msgspec

BATCH = 2_000
SNAPSHOT_PART_ROWS = 5_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--file-events", type=int, default=5_500_000, help="the traffic file's events (its name)")
    parser.add_argument("--traffic-dir", type=Path, help="where the traffic file is kept (reused when present)")
    args = parser.parse_args()

    from ringfence.bench import e2e
    from ringfence.engine.native import make_engine
    from ringfence.engine.pack import load_pack_file
    from ringfence.engine.packed import unpack_rows
    from ringfence.events.decode import validate_event
    from ringfence.events.model import encode_event

    options = e2e.Options(customers=args.customers, events=args.file_events, event_rate=e2e.REFERENCE_EVENT_RATE)
    traffic = e2e.traffic_file(options, args.traffic_dir or Path(tempfile.mkdtemp()))
    now = time.time()
    with traffic.open("rb") as lines:
        bodies = [
            encode_event(validate_event(line.rstrip(b"\n"), now)) for line in itertools.islice(lines, args.events)
        ]
    engine = make_engine(load_pack_file(None), 5.0, engine="native")

    def sizes(packed: bytes) -> tuple[int, int, int]:
        rows = unpack_rows(packed)
        return len(packed), len(msgspec.msgpack.encode(rows)), len(rows)

    log = [0, 0, 0]
    for start in range(0, len(bodies), BATCH):
        chunk = bodies[start : start + BATCH]
        engine.process_raw_many(chunk, range(start, start + len(chunk)), [0] * len(chunk), [now] * len(chunk))
        if (taken := engine.take_changes_packed()) is not None:
            log = [a + b for a, b in zip(log, sizes(taken[0]), strict=True)]
    snapshot = [0, 0, 0]
    engine.snapshot_begin()
    last = False
    while not last:
        part, _, last = engine.snapshot_next(SNAPSHOT_PART_ROWS)
        snapshot = [a + b for a, b in zip(snapshot, sizes(part), strict=True)]
    n = len(bodies)
    result = {
        "command": f"benchmarks/packed_rows.py --events {n} --customers {args.customers}",
        "events": n,
        "changelog": {
            "rows_per_event": round(log[2] / n, 2),
            "bytes_per_event": {"version 2": round(log[0] / n), "version 1": round(log[1] / n)},
            "v2_over_v1": round(log[0] / log[1], 3),
        },
        "snapshot": {
            "rows": snapshot[2],
            "bytes_per_row": {
                "version 2": round(snapshot[0] / snapshot[2], 1),
                "version 1": round(snapshot[1] / snapshot[2], 1),
            },
            "v2_over_v1": round(snapshot[0] / snapshot[1], 3),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
