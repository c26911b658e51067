"""Demo traffic for ``ringfence up --demo``: simulated events ingested in real time."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from ringfence.clock import iso
from ringfence.errors import OverloadedError
from ringfence.runtimes.embedded.platform import Platform
from ringfence.simulate.traffic import Traffic

log = logging.getLogger("ringfence.demo")
TICK_S = 0.2


async def run_demo_traffic(platform: Platform, rate_per_s: float = 50.0, customers: int = 20_000) -> None:
    """Ingest about ``rate_per_s`` events a second, with injected fraud, until cancelled."""
    traffic = Traffic(seed=int(platform.clock.time()), customers=customers, fraud_rate=0.02, source_prefix="demo")
    encoder = msgspec.json.Encoder()
    stream = traffic.stream(platform.clock.time(), rate_per_s, count=10**15)
    lookahead = next(stream)
    while True:
        await asyncio.sleep(TICK_S)
        due = iso(platform.clock.time())
        events = []
        while lookahead["occurred_at"] <= due:
            events.append(lookahead)
            lookahead = next(stream)
        service = platform.ingest
        if not events or service is None or not platform.ready:
            continue
        try:
            result = await service.ingest(encoder.encode(events), ndjson=False)
        except OverloadedError as exc:  # backpressure, or a stop under way: a producer's 503
            if platform.accepting:
                log.warning("demo traffic: ingest refused a batch (%s)", exc)
            continue
        except Exception:
            log.exception("demo traffic batch failed")
            continue
        if result.rejected:
            log.warning("demo traffic: %d events rejected: %s", len(result.rejected), result.rejected[0])
