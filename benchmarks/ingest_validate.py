"""What validation costs ingest with the compiled core's fast path and without it: CPU an event
of ``decode_batch`` over the same NDJSON bodies of simulated traffic, the fast path taken and
turned off (the full validation, in Python), in interleaved rounds in one process, so the two
compare as a ratio on a noisy machine. Also how many events the fast path took.

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

from ringfence.events import decode, fastpath
from ringfence.events.decode import REFERENCE_ONLY, decode_batch
from ringfence.simulate.traffic import Traffic

REQUEST = 2000  # the sustained benchmark's requests


def bodies(events: int, customers: int, seed: int, now: float) -> list[bytes]:
    stream = Traffic(seed=seed, customers=customers).stream(now - events / 200, 200, events)
    lines = [msgspec.json.encode(e) for e in stream]
    return [b"\n".join(lines[i : i + REQUEST]) for i in range(0, len(lines), REQUEST)]


def one_round(work: list[bytes], now: float) -> float:
    """CPU µs an event of decoding and validating every body."""
    started = time.process_time()
    count = 0
    for body in work:
        batch = decode_batch(body, ndjson=True, now=now, max_events=REQUEST, fx=REFERENCE_ONLY)
        count += batch.size
    return (time.process_time() - started) / count * 1e6


def taken(work: list[bytes], now: float) -> float:
    """The share of events the fast path accepted."""
    hits = total = 0
    for body in work:
        for item in decode.split_body(body, ndjson=True):
            total += 1
            hits += isinstance(item, msgspec.Raw) and fastpath.fast_event(item, now, None, REFERENCE_ONLY) is not None
    return hits / total


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

    results: dict[str, list[float]] = {"fast path": [], "full validation only": []}
    for round_ in range(args.rounds + 1):  # the first round of each warms up, and is left out
        for name, fast in (("fast path", shipped), ("full validation only", full_only)):
            decode.fast_event = fast  # type: ignore[assignment]
            cost = one_round(work, now)
            if round_:
                results[name].append(cost)
    decode.fast_event = shipped  # type: ignore[assignment]
    ratios = [a / b for a, b in zip(results["fast path"], results["full validation only"], strict=True)]
    print(
        json.dumps(
            {
                "date": dt.date.today().isoformat(),
                "command": " ".join(["benchmarks/ingest_validate.py", *sys.argv[1:]]),
                "events": sum(body.count(b"\n") + 1 for body in work),
                "request": REQUEST,
                "rounds": args.rounds,
                "fast_path_share": round(taken(work, now), 4),
                "cpu_us_per_event": {name: summary(values) for name, values in results.items()},
                "ratio_fast_to_full": summary(ratios),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
