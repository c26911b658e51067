"""What converting money into the reference currency costs ingest: ``decode_batch`` of the
same bodies with the stamp as shipped and with it made a no-op, interleaved rounds in one
process, so the two compare as a ratio on a noisy machine.

Bodies: requests of 100 simulator-like events, a third of them money events. ``--currency``
picks the money's currency: the reference one (EUR: the stamp copies the amount) or one with
a rate (HUF: an exact decimal product, rounded once).

    .venv/bin/python benchmarks/fx_stamp.py --currency HUF --rounds 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from decimal import Decimal
from typing import Any

import msgspec

from ringfence.events.decode import decode_batch
from ringfence.events.fx import FxRate, FxTable
from ringfence.testing import event

REQUEST = 100


def bodies(currency: str, requests: int, now: float) -> list[bytes]:
    out = []
    for r in range(requests):
        batch: list[dict[str, Any]] = []
        for i in range(REQUEST):
            n = r * REQUEST + i
            at = now - 60
            if i % 3 == 0:
                batch.append(
                    event("transfer.initiated", at=at, customer_id=f"c{n}", amount="125.50", currency=currency)
                )
            else:
                batch.append(event("login.succeeded", at=at, customer_id=f"c{n}"))
        out.append(msgspec.json.encode(batch))
    return out


def one_round(work: list[bytes], table: FxTable, now: float) -> float:
    started = time.perf_counter()
    for body in work:
        decode_batch(body, ndjson=False, now=now, max_events=REQUEST, fx=table)
    return (time.perf_counter() - started) / (len(work) * REQUEST) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--currency", default="HUF")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    now = time.time()
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    table = FxTable("EUR", {"HUF": FxRate("HUF", Decimal("0.0025"), today)})
    work = bodies(args.currency, args.requests, now)

    class NoStamp(FxTable):
        def stamp(self, data: dict[str, Any], now: float) -> str | None:
            return None

    plain = NoStamp("EUR")
    one_round(work, table, now)  # warm up both paths
    one_round(work, plain, now)
    stamped, skipped = [], []
    for _ in range(args.rounds):
        stamped.append(one_round(work, table, now))
        skipped.append(one_round(work, plain, now))
    ratios = [a / b for a, b in zip(stamped, skipped, strict=True)]
    print(
        json.dumps(
            {
                "currency": args.currency,
                "events": args.requests * REQUEST,
                "us_per_event_with_stamp": [round(x, 2) for x in stamped],
                "us_per_event_without": [round(x, 2) for x in skipped],
                "median_ratio": round(statistics.median(ratios), 3),
                "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            }
        )
    )


if __name__ == "__main__":
    main()
