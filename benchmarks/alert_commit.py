"""The store's side of alerts: CPU of ``commit_batch`` a signal, on a store that already holds
many alerts (60,000 signals over 40,000 keys: about 31,000 alerts), with batches like the
processor's late in a paced run (100 signals, about a third of them on a key with an active
alert). CPU of the calling thread, so the commit's fsync wait is left out. To compare two
versions, run it alternately with ``PYTHONPATH=<a worktree>/src`` and without.

    .venv/bin/python benchmarks/alert_commit.py --runs 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import ringfence
from ringfence.engine.rules import AlertSignal
from ringfence.store import Checkpoint, SqliteStore

PAGE_CACHE_MIB = 64  # as the processor's store connection


def signal(i: int, key: str, at: float) -> AlertSignal:
    return AlertSignal(
        rule_id="card_velocity",
        rule_version="1",
        severity="high",
        audience="fraud",
        mode="live",
        dedup_key=key,
        title="t",
        summary="s",
        labels={"card": key},
        event_id=f"e{i}",
        event_type="card.authorization",
        offset=i,
        occurred_at=at,
        ingested_at=at,
        features={"n": i},
        customer_id="c1",
    )


def one_run(rng: random.Random, alerts_before: int, batches: int) -> float:
    """CPU µs a signal over ``batches`` batches of 100, after ``alerts_before`` signals."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "store.sqlite3")
        store.conn().execute(f"PRAGMA cache_size=-{PAGE_CACHE_MIB * 1024}")
        i = 0
        keys = alerts_before * 2 // 3
        for _ in range(alerts_before // 500):
            batch = [signal(i := i + 1, f"k{rng.randrange(keys)}", 1000.0 + i) for _ in range(500)]
            store.commit_batch(batch, Checkpoint("p", i), now=1000.0)
        spent, signals = 0.0, 0
        for _ in range(batches):
            batch = [signal(i := i + 1, f"k{rng.randrange(2 * keys)}", 2000.0 + i) for _ in range(100)]
            started = time.thread_time()
            store.commit_batch(batch, Checkpoint("p", i), now=2000.0)
            spent, signals = spent + time.thread_time() - started, signals + len(batch)
        store.close()
    return spent / signals * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=60_000, help="signals committed first")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(7)
    figures = [one_run(rng, args.alerts, args.batches) for _ in range(args.runs)]
    print(f"{ringfence.__file__}: commit_batch CPU µs a signal, {args.runs} runs: {[round(f, 1) for f in figures]}")
    print(f"median {statistics.median(figures):.1f}")


if __name__ == "__main__":
    main()
