"""``GET /v1/stats``: what the operations view charts. Throughput, lag per partition, late,
rejected and quarantined events, alerts, notification failures and dead letters, now and over
recent minutes."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.alerts.model import NotificationStatus
from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.errors import json_response
from ringfence.api.platform import Platform, served
from ringfence.clock import iso

SAMPLE_EVERY_S = 2.0
SAMPLES_KEPT = 180  # six minutes of history, so a chart opened now is not empty


@dataclass(frozen=True)
class Totals:
    """Counters since the process started, read at ``at``."""

    at: float
    ingested: float
    processed: float
    rejected: float
    duplicates: float
    late: float
    quarantined: float
    alerts: float
    notifications_sent: float
    notification_failures: float
    lag: int
    notifications: dict[str, int]  # by status: pending, sent, dead, superseded
    fx_missing: float  # events whose currency had no FX rate

    @property
    def dead_letters(self) -> int:
        return self.notifications["dead"]

    @classmethod
    def read(cls, platform: Platform) -> Totals:
        """Reads the registry once and the notification log once (blocking: call off the loop).
        NotSupported where the runtime keeps no metrics."""
        own = served(platform.metrics, platform, "statistics").stats()
        shared = platform.shared_totals()  # where the runtime's processes each see only a part

        def total(name: str) -> float:
            return shared.get(name, own[name])

        by_status = platform.notifications.count_by_status()
        return cls(
            at=platform.clock.time(),
            ingested=total("ingested"),
            processed=total("processed"),
            rejected=total("rejected"),
            duplicates=total("duplicates"),
            late=total("late"),
            quarantined=total("quarantined"),
            alerts=total("alerts"),
            notifications_sent=total("notifications_sent"),
            notification_failures=total("notification_failures"),
            lag=platform.lag(),
            notifications={status: by_status.get(status, 0) for status in NotificationStatus},
            fx_missing=total("fx_missing"),
        )


RATES = ("ingested", "processed", "rejected", "late", "alerts", "notification_failures")


class OpsHistory:
    """Samples the platform's counters every few seconds; serves them as per-second rates."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._samples: deque[Totals] = deque(maxlen=SAMPLES_KEPT + 1)

    def sample(self) -> Totals:
        totals = Totals.read(self._platform)
        self._samples.append(totals)
        return totals

    def series(self) -> list[dict[str, Any]]:
        points = []
        samples = list(self._samples)
        for before, after in itertools.pairwise(samples):
            span = max(after.at - before.at, 1e-9)
            point: dict[str, Any] = {"at": iso(after.at), "lag_events": after.lag, "dead_letters": after.dead_letters}
            for name in RATES:
                point[f"{name}_per_s"] = round(max(0.0, getattr(after, name) - getattr(before, name)) / span, 3)
            points.append(point)
        return points

    async def run(self) -> None:
        if self._platform.metrics is None:
            return  # nothing to sample: statistics answer 501
        while True:
            await run_in_threadpool(self.sample)  # it queries the store: not on the event loop
            await asyncio.sleep(SAMPLE_EVERY_S)


def _snapshot(platform: Platform, history: OpsHistory) -> dict[str, Any]:
    totals = Totals.read(platform)
    log = served(platform.log, platform, "statistics")
    records = served(platform.records, platform, "statistics")
    quarantine = served(platform.quarantine, platform, "statistics")
    processed = platform.processed_offset()
    return {
        "at": iso(totals.at),
        "log_head": log.head(),
        "processed_offset": processed,
        "lag_events": totals.lag,
        "partitions": [{"partition": p, "lag_events": n} for p, n in log.lag_by_partition(processed).items()],
        "totals": {
            "ingested": int(totals.ingested),
            "processed": int(totals.processed),
            "rejected": int(totals.rejected),
            "duplicates": int(totals.duplicates),
            "late": int(totals.late),
            "alerts": int(totals.alerts),
            "notifications_sent": int(totals.notifications_sent),
            "notification_failures": int(totals.notification_failures),
            "quarantined": int(totals.quarantined),
        },
        "quarantine": quarantine.counts(),  # stored, by status: entries need admin
        "notifications": totals.notifications,
        "late_events_stored": records.count_late_events(),
        "fx": _fx(platform, int(totals.fx_missing)),
        "sample_every_s": SAMPLE_EVERY_S,
        "series": history.series(),
    }


def _fx(platform: Platform, missing: int) -> dict[str, Any]:
    """The rates in force: how many, how many stale, and the events that had no rate."""
    table = platform.fx_table()
    now = platform.clock.time()
    return {
        "reference": table.reference,
        "version": table.version,
        "rates": len(table.rates),
        "stale": len(table.stale(now)),
        "max_age_days": table.max_age_days,
        "missing_rate_events": missing,
    }


async def stats(request: Request) -> Response:
    require_unrestricted(authorize(request, "alerts:read"))  # its totals count every desk's alerts
    history: OpsHistory = request.app.state.ops_history
    return json_response(await run_in_threadpool(_snapshot, platform_of(request), history))
