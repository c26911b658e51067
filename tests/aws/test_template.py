"""deploy/aws/template.yaml: valid (cfn-lint), least privilege per function, encrypted at
rest, every route behind the JWT authorizer (the API's own routes with their scope), alarms on
lag and on anything parked, and in step with the API, the Lambda entry points and the local
event sources the tests run."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ringfence.api.app import ROUTES
from ringfence.runtimes.aws import metrics
from ringfence.runtimes.aws.local import TEMPLATE, KinesisSource, load_template, resolved

SCOPES = {"events:write", "alerts:read", "alerts:write"}
OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "src" / "ringfence" / "api" / "openapi.json").read_text())


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    loaded: dict[str, Any] = load_template()["Resources"]
    return loaded


def of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r.get("Properties", {}) for name, r in resources.items() if r["Type"] == kind}


def test_the_template_passes_cfn_lint() -> None:
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    if cfn_lint is None:
        if os.environ.get("CI") == "true":
            pytest.fail("cfn-lint must run in CI")
        pytest.skip("cfn-lint is not installed")
    result = subprocess.run([cfn_lint, str(TEMPLATE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_function_has_least_privilege_of_its_own(resources: dict[str, Any]) -> None:
    functions = of_type(resources, "AWS::Serverless::Function")
    assert set(functions) == {
        "IngestFunction",
        "ProcessorFunction",
        "TickFunction",
        "DispatcherFunction",
        "ApiFunction",
    }
    for name, props in functions.items():
        (policy,) = props["Policies"]
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in a for a in actions), (name, actions)
            assert statement["Resource"] != "*", name
    # the API reads and acknowledges alerts; it can touch neither the stream nor engine state
    api_resources = str(functions["ApiFunction"]["Policies"])
    assert "StateTable" not in api_resources
    assert "EventsStream" not in api_resources
    assert "AlertsTable" not in str(functions["IngestFunction"]["Policies"])


def test_data_at_rest_is_encrypted_with_the_deployments_key(resources: dict[str, Any]) -> None:
    for props in of_type(resources, "AWS::DynamoDB::Table").values():
        assert props["SSESpecification"]["KMSMasterKeyId"] == {"!Ref": "DataKey"}
    for props in of_type(resources, "AWS::SQS::Queue").values():
        assert props["KmsMasterKeyId"] == {"!Ref": "DataKey"}
    for props in of_type(resources, "AWS::SNS::Topic").values():
        assert props["KmsMasterKeyId"] == {"!Ref": "DataKey"}
    (stream,) = of_type(resources, "AWS::Kinesis::Stream").values()
    assert stream["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": {"!Ref": "DataKey"}}
    assert of_type(resources, "AWS::KMS::Key")["DataKey"]["EnableKeyRotation"] is True


def http_routes(resources: dict[str, Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every HTTP API route: its function and the scopes API Gateway requires."""
    routes = {}
    for function, props in of_type(resources, "AWS::Serverless::Function").items():
        for event in props.get("Events", {}).values():
            if event["Type"] == "HttpApi":
                auth = event["Properties"]["Auth"]
                route = f"{event['Properties']['Method']} {event['Properties']['Path']}"
                assert auth["Authorizer"] == ("NONE" if route == "GET /healthz" else "Jwt"), route
                routes[route] = (function, tuple(auth.get("AuthorizationScopes", ())))
    return routes


def test_every_route_needs_the_jwt_authorizer_and_the_aws_runtimes_a_scope(resources: dict[str, Any]) -> None:
    assert http_routes(resources) == {
        "POST /v1/events": ("IngestFunction", ("events:write",)),
        "GET /v1/alerts": ("ApiFunction", ("alerts:read",)),
        "GET /v1/alerts/{alert_id}": ("ApiFunction", ("alerts:read",)),
        "POST /v1/alerts/{alert_id}/ack": ("ApiFunction", ("alerts:write",)),
        "POST /v1/alerts/{alert_id}/resolve": ("ApiFunction", ("alerts:write",)),
        "GET /v1/silences": ("ApiFunction", ("alerts:read",)),
        "POST /v1/silences": ("ApiFunction", ("alerts:write",)),
        "DELETE /v1/silences/{silence_id}": ("ApiFunction", ("alerts:write",)),
        "GET /v1/notifications": ("ApiFunction", ("alerts:read",)),
        "POST /v1/notifications/{notification_id}/redrive": ("ApiFunction", ("alerts:write",)),
        "ANY /{proxy+}": ("ApiFunction", ()),  # the rest: the app checks the scope, or answers 501
        "GET /healthz": ("ApiFunction", ()),  # liveness, without credentials (DESIGN §5)
    }
    api = of_type(resources, "AWS::Serverless::HttpApi")["HttpApi"]
    assert api["Auth"]["DefaultAuthorizer"] == "Jwt"


def test_each_scoped_route_is_the_apis_own_with_the_scope_the_api_documents(resources: dict[str, Any]) -> None:
    served = {(method, route.path) for route in ROUTES for method in route.methods or ()}
    for route, (_, scopes) in http_routes(resources).items():
        if not scopes:
            continue
        method, path = route.split(" ")
        assert (method, path) in served, route
        ((scope,),) = (scopes,)
        assert scope in SCOPES
        assert f"(scope {scope}" in OPENAPI["paths"][path][method.lower()]["summary"], route


def test_the_stream_mapping_retries_bisects_and_parks_what_it_gives_up_on(resources: dict[str, Any]) -> None:
    processor = of_type(resources, "AWS::Serverless::Function")["ProcessorFunction"]
    mapping = processor["Events"]["Stream"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == KinesisSource.max_retries  # what the local source plays
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {"!GetAtt": "ProcessorFailures.Arn"}
    assert mapping["BatchSize"] == {"!Ref": "BatchSize"}
    assert mapping["ParallelizationFactor"] == 1  # the alerts' dedup pointers apply a shard's hits in order
    (stream,) = of_type(resources, "AWS::Kinesis::Stream").values()
    assert stream["ShardCount"] == {"!Ref": "ShardCount"}
    dispatcher = of_type(resources, "AWS::Serverless::Function")["DispatcherFunction"]
    assert dispatcher["Events"]["Alerts"]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_alarms_watch_the_iterator_age_and_every_parking_queue(resources: dict[str, Any]) -> None:
    alarms = of_type(resources, "AWS::CloudWatch::Alarm").values()
    assert any(a["MetricName"] == "IteratorAge" for a in alarms)
    watched = {str(a["Dimensions"][0]["Value"]) for a in alarms if a["Namespace"] == "AWS/SQS"}
    assert watched == {
        str({"!GetAtt": f"{q}.QueueName"}) for q in ("AlertsDeadLetters", "PoisonQueue", "ProcessorFailures")
    }


def test_the_template_alarms_on_the_ticks_alerts_left_waiting(resources: dict[str, Any]) -> None:
    alarm = of_type(resources, "AWS::CloudWatch::Alarm")["AlertsWaitingAlarm"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (metrics.NAMESPACE, "AlertsWaiting")
    assert [d["Name"] for d in alarm["Dimensions"]] == list(metrics.DIMENSIONS)
    assert alarm["Dimensions"] == [
        {"Name": "Stream", "Value": {"!Ref": "EventsStream"}},
        {"Name": "Function", "Value": "tick"},
    ]
    assert alarm["EvaluationPeriods"] * alarm["Period"] >= 180  # waiting minutes in a row, not one lost race
    assert alarm["Statistic"] == "Minimum"  # every tick of the span left some
    errors = of_type(resources, "AWS::CloudWatch::Alarm")["TickErrorsAlarm"]  # a failing tick writes no count
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"!Ref": "TickFunction"}}]
    assert alarm["AlarmActions"] == [{"!Ref": "OpsAlarmTopic"}]


def test_the_handlers_the_template_names_exist(resources: dict[str, Any]) -> None:
    for props in of_type(resources, "AWS::Serverless::Function").values():
        module, _, name = props["Handler"].rpartition(".")
        assert module == "ringfence.aws_lambda"
        assert callable(getattr(importlib.import_module(module), name))


def test_the_audit_key_reaches_the_functions_as_a_secret() -> None:
    template = load_template()
    assert template["Parameters"]["AuditKey"]["NoEcho"] is True
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["RINGFENCE_SECRET_AUDIT_KEY"] == {"!Ref": "AuditKey"}


def state_table(capacity: str, **units: str) -> dict[str, Any]:
    template = load_template()
    properties: dict[str, Any] = resolved(
        template["Resources"]["StateTable"]["Properties"], template, {"StateCapacity": capacity, **units}
    )
    return properties


def test_the_state_table_is_on_demand_unless_provisioned_capacity_is_chosen() -> None:
    on_demand = state_table("on-demand")
    assert on_demand["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in on_demand
    assert all("ProvisionedThroughput" not in index for index in on_demand["GlobalSecondaryIndexes"])

    provisioned = state_table("provisioned", StateWriteCapacityMin="300", StateReadCapacityMin="200")
    assert provisioned["BillingMode"] == "PROVISIONED"
    # where auto scaling starts: the table at its least, the timers index small, whatever the table's least
    assert provisioned["ProvisionedThroughput"] == {"ReadCapacityUnits": "200", "WriteCapacityUnits": "300"}
    (index,) = provisioned["GlobalSecondaryIndexes"]
    assert index["ProvisionedThroughput"] == {"ReadCapacityUnits": 5, "WriteCapacityUnits": 25}


def test_a_condition_the_provisioner_cannot_decide_is_an_error_not_a_guess() -> None:
    template = {"Parameters": {}, "Conditions": {"Odd": {"!Not": [{"!Equals": ["a", "b"]}]}}}
    with pytest.raises(ValueError, match="Odd"):
        resolved({"BillingMode": {"!If": ["Odd", "PROVISIONED", "PAY_PER_REQUEST"]}}, template)


def test_provisioned_capacity_scales_every_dimension_of_the_state_table_and_its_index(
    resources: dict[str, Any],
) -> None:
    targets = {name: r for name, r in resources.items() if r["Type"] == "AWS::ApplicationAutoScaling::ScalableTarget"}
    policies = {name: r for name, r in resources.items() if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"}
    assert all(r["Condition"] == "ProvisionedState" for r in (*targets.values(), *policies.values()))
    bounds = {
        (t["Properties"]["ResourceId"]["!Sub"], t["Properties"]["ScalableDimension"]): (
            t["Properties"]["MinCapacity"],
            t["Properties"]["MaxCapacity"],
        )
        for t in targets.values()
    }
    table, index = "table/${StateTable}", "table/${StateTable}/index/timers"

    def ref(name: str) -> dict[str, str]:
        return {"!Ref": name}

    assert bounds == {
        (table, "dynamodb:table:WriteCapacityUnits"): (ref("StateWriteCapacityMin"), ref("StateWriteCapacityMax")),
        (table, "dynamodb:table:ReadCapacityUnits"): (ref("StateReadCapacityMin"), ref("StateReadCapacityMax")),
        (index, "dynamodb:index:WriteCapacityUnits"): (25, ref("StateWriteCapacityMax")),
        (index, "dynamodb:index:ReadCapacityUnits"): (5, ref("StateReadCapacityMax")),
    }
    tracked = {p["Properties"]["ScalingTargetId"]["!Ref"]: p["Properties"] for p in policies.values()}
    assert set(tracked) == set(targets)
    for name, policy in tracked.items():
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        assert config["TargetValue"] == 70
        metric = "Write" if "Write" in targets[name]["Properties"]["ScalableDimension"] else "Read"
        assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == f"DynamoDB{metric}CapacityUtilization"
