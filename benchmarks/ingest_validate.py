"""What validation costs ingest with the compiled core's fast path and without it: CPU an event
of decoding the same NDJSON bodies of simulated traffic into the form the journal stores,
three ways in interleaved rounds in one process, so they compare as ratios on a noisy
machine: the core making the stored form alone (``decode_stored_batch``, what the embedded
ingest worker runs), the fast path's ``Event`` then stored in Python (``decode_batch`` and
``stored_event``, the worker before), and the full validation alone (the fast path off).
Also how many events each path took.

    .venv/bin/python benchmarks/ingest_validate.py --events 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ringfence.config import DEFAULT_PARTITIONS
from ringfence.events import decode, fastpath
from ringfence.events.decode import REFERENCE_ONLY, decode_batch
from ringfence.log.base import stored_event
from ringfence.simulate.traffic import Traffic

REQUEST = 2000  # the sustained benchmark's requests
PARTITIONS = DEFAULT_PARTITIONS


def bodies(events: int, customers: int, seed: int, now: float) -> list[bytes]:
    stream = Traffic(seed=seed, customers=customers).stream(now - events / 200, 200, events)
    lines = [msgspec.json.encode(e) for e in stream]
    return [b"\n".join(lines[i : i + REQUEST]) for i in range(0, len(lines), REQUEST)]


def one_round(work: list[bytes], now: float, decode_stored: Callable[[bytes, float], int]) -> float:
    """CPU µs an event of decoding, validating and storing every body."""
    started = time.process_time()
    count = sum(decode_stored(body, now) for body in work)
    return (time.process_time() - started) / count * 1e6


def by_the_core(body: bytes, now: float) -> int:
    batch = decode.decode_stored_batch(
        body,
        ndjson=True,
        now=now,
        max_events=REQUEST,
        partitions=PARTITIONS,
        stored_form=stored_event,
        fx=REFERENCE_ONLY,
    )
    return batch.size


def in_python(body: bytes, now: float) -> int:
    batch = decode_batch(body, ndjson=True, now=now, max_events=REQUEST, fx=REFERENCE_ONLY)
    _ = [stored_event(e, PARTITIONS) for e in batch.events]
    return batch.size


def taken(work: list[bytes], now: float) -> dict[str, float]:
    """The share of events the fast path accepted, and the core stored alone."""
    fast = stored = total = 0
    for body in work:
        items = decode.split_body(body, ndjson=True)
        total += len(items)
        fast += sum(fastpath.fast_event(item, now, None, REFERENCE_ONLY) is not None for item in items)
        stored += sum(s is not None for s in fastpath.fast_stored(items, now, None, REFERENCE_ONLY, PARTITIONS))
    return {"fast path": round(fast / total, 4), "stored by the core": round(stored / total, 4)}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    now = time.time()
    work = bodies(args.events, args.customers, args.seed, now)
    shipped: Callable[..., Any] = fastpath.fast_event

    def full_only(*_: Any) -> None:
        return None

    contenders = {
        "stored by the core": (by_the_core, shipped),
        "fast path, stored in Python": (in_python, shipped),
        "full validation only": (in_python, full_only),
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(args.rounds + 1):  # the first round of each warms up, and is left out
        for name, (run, fast) in contenders.items():
            decode.fast_event = fast  # type: ignore[assignment]
            cost = one_round(work, now, run)
            if round_:
                results[name].append(cost)
    decode.fast_event = shipped  # type: ignore[assignment]

    def ratio(name: str, to: str) -> dict[str, float]:
        return summary([a / b for a, b in zip(results[name], results[to], strict=True)])

    print(
        json.dumps(
            {
                "date": dt.date.today().isoformat(),
                "command": " ".join(["benchmarks/ingest_validate.py", *sys.argv[1:]]),
                "events": sum(body.count(b"\n") + 1 for body in work),
                "request": REQUEST,
                "rounds": args.rounds,
                "share_taken": taken(work, now),
                "cpu_us_per_event": {name: summary(values) for name, values in results.items()},
                "ratio_core_to_python_store": ratio("stored by the core", "fast path, stored in Python"),
                "ratio_fast_to_full": ratio("fast path, stored in Python", "full validation only"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
