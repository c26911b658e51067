"""Counting alerts reads every match: bounded so one analyst's many counts cannot take the
threads every other read uses (found by a hostile test: another analyst's list took 19 s)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ringfence.alerts.model import AlertQuery
from ringfence.api import alerts as alerts_module
from ringfence.api.alerts import AlertCounts


class SlowTriage:
    def __init__(self) -> None:
        self.calls: list[AlertQuery] = []
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def count_alerts_by(self, query: AlertQuery) -> dict[str, dict[str, int]]:
        with self._lock:
            self.calls.append(query)
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.2)
        with self._lock:
            self.running -= 1
        return {"severity": {"high": len(self.calls)}, "status": {"open": len(self.calls)}}


def test_the_same_count_asked_at_once_is_counted_once_and_at_most_two_run_at_once() -> None:
    triage, counts = SlowTriage(), AlertCounts()

    async def run() -> list[Any]:
        same = [counts.count(triage, AlertQuery(status=("open",), limit=n)) for n in range(1, 41)]
        others = [counts.count(triage, AlertQuery(rule_id=f"r{n}")) for n in range(6)]
        return await asyncio.gather(*same, *others)

    answers = asyncio.run(run())
    assert len(triage.calls) == 1 + 6  # forty asks of one count (limits differ: no matter), six others
    assert all(a == answers[0] for a in answers[:40])
    assert triage.most <= alerts_module.COUNTS_AT_ONCE


def test_a_count_asked_after_one_ended_is_counted_again() -> None:
    """Nothing is kept: a count asked after a change sees it (the dashboard's widget asks again
    at each live update, and a kept count left it at 0 with an alert shown)."""
    triage, counts = SlowTriage(), AlertCounts()

    async def twice() -> None:
        await counts.count(triage, AlertQuery())
        await counts.count(triage, AlertQuery())

    asyncio.run(twice())
    assert len(triage.calls) == 2
