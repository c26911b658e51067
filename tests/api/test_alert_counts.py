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
from ringfence.errors import RequestError


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
        others = [counts.count(triage, AlertQuery(rule_id=f"r{n}"), f"key-{n}") for n in range(6)]
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


def test_a_key_has_a_bounded_number_of_its_own_counts_waiting_and_others_are_not_held() -> None:
    """Found by a re-test: one analyst's 20 distinct counts at once (each a different ``since``)
    queued ahead of another analyst's, whose count took 9 s instead of 0.8."""
    triage, counts = SlowTriage(), AlertCounts()

    async def run() -> list[Any]:
        mine = [counts.count(triage, AlertQuery(rule_id=f"r{n}"), "flood") for n in range(10)]
        theirs = counts.count(triage, AlertQuery(), "other")
        answers = await asyncio.gather(*mine, theirs, return_exceptions=True)
        answers.append(await counts.count(triage, AlertQuery(rule_id="later"), "flood"))  # given back
        return answers

    answers = asyncio.run(run())
    refused = [a for a in answers[:10] if isinstance(a, RequestError)]
    assert len(refused) == 10 - alerts_module.COUNTS_PER_KEY
    assert all(r.status == 429 for r in refused)
    assert isinstance(answers[10], dict)  # the other key's count
    assert isinstance(answers[11], dict)
    assert len(triage.calls) == alerts_module.COUNTS_PER_KEY + 2
