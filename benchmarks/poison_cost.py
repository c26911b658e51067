"""What a poison event costs the embedded processor at a bank's scale of state: the time to
process a batch of the processor's size holding ``--poison`` records no engine can read (a
record written around ingest's checks), against the same batch size without, after
``--events`` events of ``--customers`` customers (simulator traffic, the default pack, the
compiled core). Clean and poisoned batches alternate, a clean one first. The difference over
the number of poison records is the price of one: until 2026-12-07 a reload of the whole
checkpoint for the batch and one for each poison; since then an undo of the batch in memory
(the engine keeps copies of the states each batch changes: the clean batches show their cost,
against the code before).

Each ``--code NAME=PYTHONPATH`` runs in a fresh process per round (``installed`` for the code
of this checkout, with the installed core); rounds interleave the codes, so a drifting machine
shows as spread. The processor runs on the caller's thread, its commits not behind it, over a
journal and a store in a temporary folder (full durability).

    .venv/bin/python benchmarks/poison_cost.py --code before=/tmp/old/src:/tmp/old-core \\
        --code installed= --rounds 3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LOAD_CHUNK = 5_000  # events appended, then processed, at a time while the state is built
BATCH = 5_000  # events a measured batch: the processor's BATCH_SIZE
BATCHES = 4  # measured batches of each kind a run, alternating


def inner(traffic: Path, events: int, poison: int) -> dict[str, Any]:
    """In a fresh process: build the state, then time clean and poisoned batches."""
    from ringfence.engine.native import make_engine
    from ringfence.engine.pack import load_pack_file
    from ringfence.events.decode import validate_event
    from ringfence.metrics import Metrics
    from ringfence.runtimes.embedded.journal import SqliteLog
    from ringfence.runtimes.embedded.processor import Processor
    from ringfence.store.sqlite import SqliteStore
    from ringfence.testing import FixedClock

    now = time.time()
    needed = events + 2 * BATCHES * BATCH
    with traffic.open("rb") as lines:
        stream = [validate_event(line.rstrip(b"\n"), now) for _, line in zip(range(needed), lines, strict=False)]
    if len(stream) < needed:
        raise SystemExit(f"the traffic holds {len(stream)} events: {needed} are needed")
    with tempfile.TemporaryDirectory() as tmp:
        log = SqliteLog(Path(tmp) / "journal.db", 8)
        store = SqliteStore(Path(tmp) / "store.db", b"k" * 32)
        engine = make_engine(load_pack_file(None), 5.0, engine="native")
        processor = Processor(log, store, engine, Metrics(), FixedClock(now))
        processor.recover()
        reads = 0
        real_restore = store.restore_state

        def counting(engine: Any) -> int:
            nonlocal reads
            reads += 1
            return int(real_restore(engine))

        store.restore_state = counting  # type: ignore[method-assign]

        def run(chunk: list[Any], poisoned: int) -> float:
            offsets = log.append(chunk, now)
            for k in range(poisoned):  # spread through the batch, each its own customer's
                offset = offsets[(k + 1) * len(chunk) // (poisoned + 1)]
                segment = [s for s in log.segments() if s.first <= offset][-1]
                with sqlite3.connect(str(segment.path)) as conn:
                    conn.execute("UPDATE journal SET body = x'00ff' WHERE offset = ?", (offset,))
                conn.close()
            started = time.perf_counter()
            while processor.offset < log.head():
                processor.run_once()
            return time.perf_counter() - started

        for lo in range(0, events, LOAD_CHUNK):
            run(stream[lo : lo + LOAD_CHUNK], 0)
        state = processor.engine.state_size()
        clean, poisoned = [], []
        at = events
        for _ in range(BATCHES):
            clean.append(run(stream[at : at + BATCH], 0))
            poisoned.append(run(stream[at + BATCH : at + 2 * BATCH], poison))
            at += 2 * BATCH
        log.close()
        store.close()
    return {"states": state, "clean_s": clean, "poisoned_s": poisoned, "checkpoint_reads": reads}


def priced(run: dict[str, Any], poison: int) -> dict[str, Any]:
    """A run's figures: the first poisoned batch against the clean one before it, the later
    ones against the clean ones among them (seconds a poison record), and a clean batch's
    seconds (the median)."""
    clean, poisoned = run["clean_s"], run["poisoned_s"]
    return {
        "first_s_a_poison": round((poisoned[0] - clean[0]) / poison, 4),
        "later_s_a_poison": round((statistics.median(poisoned[1:]) - statistics.median(clean[1:])) / poison, 4),
        "clean_batch_s": round(statistics.median(clean), 4),
    }


def one_run(traffic: Path, path: str, events: int, poison: int) -> dict[str, Any]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path
    argv = [sys.executable, __file__, "--inner", str(traffic), "--events", str(events), "--poison", str(poison)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=400_000, help="events run before the measured batches")
    parser.add_argument("--poison", type=int, default=5, help="poison records in each poisoned batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", action="append", help="NAME=PYTHONPATH (empty: this checkout, installed core)")
    parser.add_argument("--traffic-dir", type=Path, help="keep the generated traffic here (reused when present)")
    parser.add_argument("--out", type=Path, help="a folder: poison-cost.json is written there")
    parser.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner, args.events, args.poison)))
        return
    from ringfence.bench import e2e

    codes = dict(c.split("=", 1) for c in args.code or ["installed="])
    options = e2e.Options(
        customers=args.customers, events=args.events + 2 * BATCHES * BATCH, event_rate=e2e.REFERENCE_EVENT_RATE
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in codes}
    with tempfile.TemporaryDirectory() as tmp:
        traffic = e2e.traffic_file(options, args.traffic_dir or Path(tmp))
        for _ in range(args.rounds):
            for name, path in codes.items():
                run = one_run(traffic, path, args.events, args.poison)
                run.update(priced(run, args.poison))
                runs[name].append(run)
                print(
                    f"{name}: the first poison {run['first_s_a_poison']} s, later ones {run['later_s_a_poison']} s "
                    f"each; a clean batch {run['clean_batch_s']} s; {run['states']:,} states",
                    flush=True,
                )

    def median_and_range(rs: list[dict[str, Any]], key: str) -> dict[str, Any]:
        values = [r[key] for r in rs]
        return {"median": statistics.median(values), "range": [min(values), max(values)]}

    summary = {
        name: {
            "first_s_a_poison": median_and_range(rs, "first_s_a_poison"),
            "later_s_a_poison": median_and_range(rs, "later_s_a_poison"),
            "clean_batch_s": median_and_range(rs, "clean_batch_s"),
            "checkpoint_reads_a_run": [r["checkpoint_reads"] for r in rs],
        }
        for name, rs in runs.items()
    }
    result = {
        "customers": args.customers,
        "events_before": args.events,
        "batch": BATCH,
        "poison_a_batch": args.poison,
        "codes": codes,
        "summary": summary,
        "runs": runs,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "poison-cost.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
