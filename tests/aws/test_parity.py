"""The aws path produces the alerts of the embedded runtime, id for id and count for count,
from the same hidden-style input (simulated bank traffic with injected fraud scenarios)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ringfence.simulate import Traffic
from ringfence.testing import create_key, start_server
from tests.aws.conftest import DeploymentFactory
from tests.runtimes.test_crash_recovery import all_alerts, post_batch


def yesterday_at(hour: int) -> float:
    """Yesterday at ``hour`` UTC: windows are aligned to the clock and the traffic follows the
    time of day, so the same start time of day raises the same alerts whatever the date."""
    return (int(time.time()) // 86400 - 1) * 86400.0 + hour * 3600


def workload() -> list[dict[str, Any]]:
    traffic = Traffic(seed=23, customers=150, fraud_rate=0.2, source_prefix="aws")
    return list(traffic.stream(start=yesterday_at(21), rate_per_s=20.0, count=1500))


def embedded_alerts(data_dir: Path, events: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    key = create_key(data_dir, "producer", "events:write", "alerts:read")
    server = start_server(data_dir)
    try:
        for start in range(0, len(events), 100):
            post_batch(server, key, events[start : start + 100])
        server.wait_processed(key)
        return all_alerts(server, key)
    finally:
        server.stop()


def test_the_aws_path_raises_the_alerts_of_the_embedded_runtime(deploy: DeploymentFactory, tmp_path: Path) -> None:
    events = workload()
    expected = embedded_alerts(tmp_path / "embedded", events)
    # the workload exercises many detections, cross-customer ones among them, and dedup
    assert len(expected) >= 50
    assert {"credential_stuffing_ip", "card_testing", "ops_api_error_rate"} <= {r for r, _ in expected.values()}
    assert any(count > 1 for _, count in expected.values())

    # Lambda reads the shards side by side, small batches at a time
    aws = deploy(shards=2, batch_size=25)
    aws.send(events)
    aws.stream.drain()

    assert aws.alerts() == expected
    assert aws.failures == []
