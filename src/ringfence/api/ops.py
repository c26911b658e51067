"""``GET /v1/stats``: what the operations view charts. Throughput, lag per partition, late and
rejected events, alerts, notification failures and dead letters, now and over recent minutes."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of
from ringfence.api.errors import json_response
from ringfence.clock import iso
from ringfence.runtimes.embedded import Platform
from ringfence.store.notifications import NotificationStore

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
    alerts: float
    notifications_sent: float
    notification_failures: float
    lag: int
    dead_letters: int

    @classmethod
    def read(cls, platform: Platform) -> Totals:
        m = platform.metrics
        return cls(
            at=platform.clock.time(),
            ingested=m.total("ringfence_events_ingested"),
            processed=m.total("ringfence_events_processed"),
            rejected=m.total("ringfence_events_rejected"),
            duplicates=m.total("ringfence_events_duplicate"),
            late=m.total("ringfence_events_late"),
            alerts=m.total("ringfence_alerts"),
            notifications_sent=m.total("ringfence_notifications", outcome="sent"),
            notification_failures=m.total("ringfence_notifications", outcome="retry")
            + m.total("ringfence_notifications", outcome="failed"),
            lag=platform.lag(),
            dead_letters=NotificationStore(platform.store).count_by_status().get("dead", 0),
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
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY_S)


def _snapshot(platform: Platform, history: OpsHistory) -> dict[str, Any]:
    totals = Totals.read(platform)
    processed = platform.processor.offset
    notifications = NotificationStore(platform.store).count_by_status()
    return {
        "at": iso(totals.at),
        "log_head": platform.log.head(),
        "processed_offset": processed,
        "lag_events": totals.lag,
        "partitions": [{"partition": p, "lag_events": n} for p, n in platform.log.lag_by_partition(processed).items()],
        "totals": {
            "ingested": int(totals.ingested),
            "processed": int(totals.processed),
            "rejected": int(totals.rejected),
            "duplicates": int(totals.duplicates),
            "late": int(totals.late),
            "alerts": int(totals.alerts),
            "notifications_sent": int(totals.notifications_sent),
            "notification_failures": int(totals.notification_failures),
        },
        "notifications": {status: notifications.get(status, 0) for status in ("pending", "sent", "dead")},
        "late_events_stored": platform.store.count_late_events(),
        "sample_every_s": SAMPLE_EVERY_S,
        "series": history.series(),
    }


async def stats(request: Request) -> Response:
    authorize(request, "alerts:read")
    history: OpsHistory = request.app.state.ops_history
    return json_response(await run_in_threadpool(_snapshot, platform_of(request), history))
