"""What the scale-out runtimes' tests compare against: the embedded runtime on the same input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ringfence.bench.servers import create_key, start_server
from ringfence.simulate import Traffic
from tests.helpers.http import all_alerts, post_batch


def yesterday_at(hour: int) -> float:
    """Yesterday at ``hour`` UTC: windows are aligned to the clock and the traffic follows the
    time of day, so the same start time of day raises the same alerts whatever the date."""
    return (int(time.time()) // 86400 - 1) * 86400.0 + hour * 3600


def workload(source_prefix: str, count: int = 1500) -> list[dict[str, Any]]:
    """Simulated bank traffic with injected fraud: many detections, cross-customer ones among them."""
    # a seed whose 1,500 events raise the cross-customer detections the runtimes' tests name
    # (the simulator's scenarios change the stream a seed gives: pick again when they change)
    traffic = Traffic(seed=20, customers=150, fraud_rate=0.2, source_prefix=source_prefix)
    return list(traffic.stream(start=yesterday_at(21), rate_per_s=20.0, count=count))


def embedded_alerts(data_dir: Path, events: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """The alerts (id: rule, count) the embedded runtime raises on ``events``."""
    key = create_key(data_dir, "producer", "events:write", "alerts:read")
    server = start_server(data_dir)
    try:
        for start in range(0, len(events), 100):
            post_batch(server, key, events[start : start + 100])
        server.wait_processed(key)
        return all_alerts(server, key)
    finally:
        server.stop()
