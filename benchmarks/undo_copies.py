"""What the copies the compiled core keeps to undo a failed batch cost (item 37 of
docs/performance.md): the engine over the state-size traffic (1,000,000 customers by default),
in batches as the embedded processor runs it (``process_raw_many``, then the changed state
packed for the store), every other batch with the copies kept (an undo point set before it)
and every other without. Adjacent batches see nearly the same state and machine, so the ratio
of their CPU time is the copies' cost with little of the machine's drift in it. The batches of
the first ``--warmup`` events are left out.

    .venv/bin/python benchmarks/undo_copies.py --batch 5000 --out benchmarks/results
    .venv/bin/python benchmarks/undo_copies.py --batch 500   # a paced load's smaller batches
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def measure(traffic: Path, batch: int, warmup: int) -> dict[str, float]:
    from ringfence.engine.native import make_engine
    from ringfence.engine.pack import load_pack_file
    from ringfence.events.decode import validate_event
    from ringfence.events.model import encode_event

    now = time.time()
    with traffic.open("rb") as lines:
        bodies = [encode_event(validate_event(line.rstrip(b"\n"), now)) for line in lines]
    engine = make_engine(load_pack_file(None), 5.0, engine="native")
    per_event: dict[bool, list[float]] = {True: [], False: []}
    for n, lo in enumerate(range(0, len(bodies), batch)):
        copies = n % 2 == 0
        if copies:
            engine.undo_point()
        else:
            engine.forget_undo()
        run = bodies[lo : lo + batch]
        started = time.process_time()
        engine.process_raw_many(run, range(lo + 1, lo + len(run) + 1), [0] * len(run), [now] * len(run))
        engine.take_changes_packed()
        engine.changes_committed()
        spent = time.process_time() - started
        if lo >= warmup:
            per_event[copies].append(spent / len(run) * 1e6)
    kept, none = statistics.median(per_event[True]), statistics.median(per_event[False])
    return {
        "us_cpu_per_event_copies_kept": round(kept, 3),
        "us_cpu_per_event_no_copies": round(none, 3),
        "ratio": round(kept / none, 3),
        "batches_each": len(per_event[True]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--warmup", type=int, default=200_000, help="events whose batches are left out")
    parser.add_argument("--traffic-dir", type=Path, help="keep the generated traffic here (reused when present)")
    parser.add_argument("--out", type=Path, help="a folder: undo-copies-batch<N>.json is written there")
    args = parser.parse_args()
    from ringfence.bench import e2e

    options = e2e.Options(customers=args.customers, events=args.events, event_rate=e2e.REFERENCE_EVENT_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        traffic = e2e.traffic_file(options, args.traffic_dir or Path(tmp))
        result = {"customers": args.customers, "events": args.events, "batch": args.batch}
        result.update(measure(traffic, args.batch, args.warmup))
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"undo-copies-batch{args.batch}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
