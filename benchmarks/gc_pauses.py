"""A process worker's full garbage collections at steady state, in one process.

What a worker holds in Python objects for good, once its dedup window has filled: each stage
task's seen event ids (a record a commit with new ids, ``kafka_dedup_window_s`` of them), and
the platform's start-up objects (modules, functions, types). A full collection walks all that
is tracked, and every alert in flight waits for it. This builds the seen ids a worker holds at
``--rate`` events/s after the window, with a commit every ``--commit-ms`` in each task, then
times full collections (median of ``--repeat``); ``--freeze`` freezes the start-up objects
first, as every service does (``ringfence.runtimes.heap``).

    .venv/bin/python benchmarks/gc_pauses.py --rate 2000 --window 600 --tasks 24 [--freeze]

``--tasks``: the worker's stage tasks (partitions x stages: 8 x 3 by default); each sees every
event routed to it, so the rate is per stage.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time


def full_collection_ms(repeat: int) -> list[float]:
    took = []
    for _ in range(repeat):
        started = time.perf_counter()
        gc.collect()
        took.append((time.perf_counter() - started) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=2_000, help="events/s into the worker, each stage's copy")
    parser.add_argument("--window", type=float, default=600.0, help="kafka_dedup_window_s")
    parser.add_argument("--tasks", type=int, default=24, help="stage tasks of the worker")
    parser.add_argument("--stages", type=int, default=3, help="stages an event goes through")
    parser.add_argument("--commit-ms", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--freeze", action="store_true", help="freeze start-up's objects first")
    args = parser.parse_args()

    import ringfence.api.app
    import ringfence.runtimes.kafka.worker  # noqa: F401 - the start-up objects of a worker
    from ringfence.runtimes.kafka.seen import SeenIds, event_key

    if args.freeze:  # as a service does once started (a tree from before it has no such step)
        from ringfence.runtimes.heap import freeze_start_up

        freeze_start_up()
    commits = int(args.window * 1000 / args.commit_ms)
    per_commit = args.rate * args.stages * args.commit_ms / 1000 / args.tasks
    tasks = [SeenIds() for _ in range(args.tasks)]
    n, owed = 0, 0.0
    for c in range(commits):
        at = c * args.commit_ms / 1000
        owed += per_commit
        for task in tasks:
            for _ in range(int(owed)):
                task.add(event_key("mobile-app", f"{n:032x}"), at)
                n += 1
            task.changelog(str(c))
        owed -= int(owed)
    gc.collect()
    took = full_collection_ms(args.repeat)
    result = {
        "command": f"benchmarks/gc_pauses.py --rate {args.rate} --window {args.window} --tasks {args.tasks} "
        f"--stages {args.stages} --commit-ms {args.commit_ms}" + (" --freeze" if args.freeze else ""),
        "held": {"ids": sum(len(t.ids) for t in tasks), "records": sum(len(t.batches) for t in tasks)},
        "tracked_objects": len(gc.get_objects()),
        "full_collection_ms": {"median": round(statistics.median(took), 1), "runs": [round(t, 1) for t in took]},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
