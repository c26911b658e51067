"""The compiled core alone at a bank's scale of keys: CPU an event of ``process_raw`` over the
state-size benchmark's traffic (2,000,000 events from 1,000,000 customers by default), where the
engine's tables far outgrow the caches, unlike ``ringfence bench --engine-only``'s 100,000
customers. Each run is a fresh process and engine; the events' stored JSON is encoded before
the clock starts. With ``--changes`` the changed state is taken every 2,000 events, as the
processor takes it each batch.

Each ``--core`` is a folder holding a ``ringfence_native`` package (a copy of the installed one,
or a wheel unpacked); several are run in interleaved rounds, so a drifting machine shows as
spread rather than as a difference between builds.

    .venv/bin/python benchmarks/engine_at_scale.py --core /tmp/old --core /tmp/new --rounds 3 --changes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHANGES_EVERY = 2_000


def inner(traffic: Path, changes: bool) -> None:
    """In a fresh process: one engine over ``traffic``; prints µs of CPU an event."""
    from ringfence.engine.native import make_engine
    from ringfence.engine.pack import load_pack_file
    from ringfence.events.decode import validate_event
    from ringfence.events.model import encode_event

    now = time.time()
    with traffic.open("rb") as lines:
        bodies = [encode_event(validate_event(line.rstrip(b"\n"), now)) for line in lines]
    engine = make_engine(load_pack_file(None), 5.0, engine="native")
    process_raw = engine.process_raw
    started = time.process_time()
    for offset, body in enumerate(bodies, 1):
        process_raw(body, offset, 0, now)
        if changes and offset % CHANGES_EVERY == 0:
            engine.take_changes()
    print(json.dumps({"us_cpu_per_event": (time.process_time() - started) / len(bodies) * 1e6}))


def one_run(traffic: Path, core: str | None, changes: bool) -> float:
    env = dict(os.environ)
    if core:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [core, env.get("PYTHONPATH")]))
    argv = [sys.executable, __file__, "--inner", str(traffic), *(["--changes"] if changes else [])]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["us_cpu_per_event"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", action="store_true", help="take the changed state every 2,000 events")
    parser.add_argument("--core", action="append", help="a folder holding a ringfence_native package")
    parser.add_argument("--traffic-dir", type=Path, help="keep the generated traffic here (reused when present)")
    parser.add_argument("--out", type=Path, help="a folder: engine-at-scale.json is written there")
    parser.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner, args.changes)
        return
    from ringfence.bench import e2e

    options = e2e.Options(customers=args.customers, events=args.events, event_rate=e2e.REFERENCE_EVENT_RATE)
    cores: list[str | None] = args.core or [None]
    runs: dict[str, list[float]] = {core or "installed": [] for core in cores}
    with tempfile.TemporaryDirectory() as tmp:
        traffic = e2e.traffic_file(options, args.traffic_dir or Path(tmp))
        for _ in range(args.rounds):
            for core in cores:
                runs[core or "installed"].append(round(one_run(traffic, core, args.changes), 2))
                print(f"{core or 'installed'}: {runs[core or 'installed'][-1]} µs of CPU an event", flush=True)
    result = {
        "customers": args.customers,
        "events": args.events,
        "changes_every": CHANGES_EVERY if args.changes else None,
        "us_cpu_per_event": {name: {"runs": r, "median": sorted(r)[len(r) // 2]} for name, r in runs.items()},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "engine-at-scale.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
