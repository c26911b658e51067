"""The aws path produces the alerts of the embedded runtime, id for id and count for count,
from the same hidden-style input (simulated bank traffic with injected fraud scenarios)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import parity
from tests.helpers.aws import DeploymentFactory
from tests.helpers.aws import workload as aws_workload


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


def test_a_deployment_with_provisioned_state_capacity_raises_the_same_alerts(deploy: DeploymentFactory) -> None:
    """The template's provisioned mode makes a table the local endpoint accepts, its index with
    units of its own, and the runtime is indifferent to how its capacity is paid for."""
    events = aws_workload(300)
    runs = {}
    for capacity in ("on-demand", "provisioned"):
        d = deploy(template_parameters={"StateCapacity": capacity, "StateWriteCapacityMin": "40"})
        d.send(events)
        d.stream.drain()
        table = d.runtime.clients.dynamodb.describe_table(TableName=d.runtime.names.state_table)["Table"]
        runs[capacity] = (table.get("BillingModeSummary", {}).get("BillingMode"), d.alerts())
        if capacity == "provisioned":
            assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 40
            assert table["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"]["WriteCapacityUnits"] == 25
    assert runs["on-demand"][0] == "PAY_PER_REQUEST"
    assert runs["provisioned"][0] == "PROVISIONED"
    assert len(runs["on-demand"][1]) >= 5
    assert runs["provisioned"][1] == runs["on-demand"][1]
