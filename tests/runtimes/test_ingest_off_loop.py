"""Ingest without a body worker (the kafka runtime's, the embedded one's with
``ingest_process`` off) validates a large body off the event loop: one producer's bodies of
thousands of invalid events, or of digits to scan for card numbers, take the CPU for seconds,
and the loop must still answer everyone else (``/healthz``, a one-event request) meanwhile."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from ringfence.clock import SystemClock
from ringfence.metrics import Metrics
from ringfence.runtimes import ingest
from ringfence.runtimes.ingest import OFF_LOOP_BYTES, IngestService
from ringfence.testing import event


class NoAppender:
    async def append(self, events: list[object]) -> list[int | None]:
        raise AssertionError("nothing in the body is valid")


def invalid_body(n: int) -> bytes:
    events = []
    for i in range(n):
        e = event("card.authorization", customer_id=f"c{i}", event_id=f"bad-{i}")
        e["data"]["amount"] = "abc"
        e["occurred_at"] = "nope"
        e["bogus"] = 1
        events.append(e)
    return msgspec.json.encode(events)


@pytest.mark.serial  # the loop's gaps
def test_the_event_loop_answers_others_while_a_large_body_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    # this is about the loop, not the validation budget (its own tests): a slow host's CPU time
    # for these 40,000 invalid events once passed what a key may spend (a CI rehearsal)
    monkeypatch.setattr(ingest, "COSTLY_BURST_S", 1e9)
    service = IngestService(
        NoAppender(), Metrics(), SystemClock(), max_batch_events=100_000, max_lag_events=10, lag=lambda: 0
    )
    body = invalid_body(40_000)
    assert len(body) >= OFF_LOOP_BYTES

    async def scenario() -> tuple[float, float, int]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def others() -> None:  # what the loop serves beside it: a tick every 10 ms
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.ensure_future(others())
        began = time.monotonic()
        result = await service.ingest(body, ndjson=False)
        took = time.monotonic() - began
        done.set()
        await ticking
        return took, max(gaps, default=took), len(result.rejected)  # none: it never ran meanwhile

    took, worst_gap, rejected = asyncio.run(scenario())
    assert rejected == 40_000
    assert took > 1.0  # long enough that the loop would have stalled
    # on the loop, the gap would be the whole validation; a loaded host (8.9 s for it in a CI
    # rehearsal) stretches ticks too, so a tenth of the time it took is the bound past 0.5 s
    assert worst_gap < max(0.5, took / 10), f"the event loop stalled {worst_gap:.2f} s of {took:.2f} s"
