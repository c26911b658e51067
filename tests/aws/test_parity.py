"""The aws path produces the alerts of the embedded runtime, id for id and count for count,
from the same hidden-style input (simulated bank traffic with injected fraud scenarios)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import parity
from tests.helpers.aws import DeploymentFactory


def workload() -> list[dict[str, Any]]:
    return parity.workload("aws")


def test_the_aws_path_raises_the_alerts_of_the_embedded_runtime(deploy: DeploymentFactory, tmp_path: Path) -> None:
    events = workload()
    expected = parity.embedded_alerts(tmp_path / "embedded", events)
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
