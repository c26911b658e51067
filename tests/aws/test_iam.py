"""Each function's policy in the template allows every AWS call its handler makes: the
handlers run against the local endpoint, each with clients of its own that record the calls
(and, for a transaction, each item's action), and every call must be granted on its resource.
Least privilege is checked in test_template.py; this checks it is enough."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ringfence.aws_lambda import http_handler
from ringfence.config import load_settings
from ringfence.runtimes.aws.handlers import AwsRuntime, dispatch_event, process_event
from ringfence.runtimes.aws.local import KinesisSource, QueueSource, load_template, provision
from ringfence.runtimes.aws.resources import AwsClients, AwsNames
from ringfence.testing import event
from tests.helpers.aws import ANALYST, AUDIT_KEY, PRODUCER, READER, REGION, http_event
from tests.helpers.receivers import RecordingReceiver

FUNCTIONS = {
    "ingest": "IngestFunction",
    "process": "ProcessorFunction",
    "tick": "TickFunction",
    "dispatch": "DispatcherFunction",
    "api": "ApiFunction",
}
Grant = tuple[str, str]  # (IAM action, logical resource, e.g. "StateTable/index/timers")


def granted(function: str) -> set[Grant]:
    props = load_template()["Resources"][function]["Properties"]
    out: set[Grant] = set()
    for statement in props["Policies"][0]["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            for resource in resources:
                out.add((action, _logical(resource)))
    return out


def _logical(resource: dict[str, str]) -> str:
    ((kind, value),) = resource.items()
    if kind == "!Sub":  # "${StateTable.Arn}/index/timers"
        return value.replace("${", "").replace(".Arn}", "")
    return value.removesuffix(".Arn")


class Recorder:
    """What one handler's clients asked AWS for, as IAM actions on logical resources."""

    def __init__(self, names: AwsNames, queues: dict[str, str]) -> None:
        self.calls: set[Grant] = set()
        self.tables = {names.state_table: "StateTable", names.alerts_table: "AlertsTable"}
        self.queues = queues

    def attach(self, clients: AwsClients) -> None:
        for client in (clients.dynamodb, clients.kinesis, clients.sns, clients.sqs):
            client.meta.events.register("provide-client-params.*.*", self._record)

    def _table(self, params: dict[str, Any]) -> str:
        logical = self.tables[params["TableName"]]
        return f"{logical}/index/{params['IndexName']}" if "IndexName" in params else logical

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.endpoint_prefix
        op = model.name
        if op == "TransactWriteItems":
            verbs = {
                "Put": "PutItem",
                "Update": "UpdateItem",
                "Delete": "DeleteItem",
                "ConditionCheck": "ConditionCheckItem",
            }
            for item in params["TransactItems"]:
                ((kind, body),) = item.items()
                self.calls.add((f"dynamodb:{verbs[kind]}", self._table(body)))
        elif op == "BatchGetItem":
            for table in params["RequestItems"]:
                self.calls.add(("dynamodb:BatchGetItem", self.tables[table]))
        elif service == "dynamodb":
            self.calls.add((f"dynamodb:{op}", self._table(params)))
        elif service == "kinesis":
            self.calls.add((f"kinesis:{op}", "EventsStream"))
        elif service == "sns":
            self.calls.add((f"sns:{op}", "AlertsTopic"))
        elif service == "sqs":
            self.calls.add((f"sqs:{op}", self.queues[params["QueueUrl"]]))


@pytest.fixture
def receiver_config(tmp_path: Path, receiver: RecordingReceiver) -> Path:
    path = tmp_path / "alerting.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "receivers": [{"name": "hook", "webhook": {"url": receiver.url + "/hook"}}],
                "route": {"receiver": "hook", "group_wait": "0s"},
                "retry": {"base_delay": "1s", "max_delay": "1s", "max_attempts": 3},  # due after the step: a wake-up
                "inhibit_rules": [
                    {
                        "source_matchers": ["severity=critical"],
                        "target_matchers": ["severity=medium"],
                        "equal": ["customer_id"],
                    }
                ],
            }
        )
    )
    return path


def test_every_call_a_handler_makes_is_granted_to_its_function(
    aws_endpoint: str, receiver: RecordingReceiver, receiver_config: Path
) -> None:
    shared = AwsClients(REGION)
    prefix = f"iam{int(time.time() * 1000) % 10**9}"
    names = provision(shared, prefix, shards=1)
    queue_url = {q: shared.sqs.get_queue_url(QueueName=f"{prefix}-{q}")["QueueUrl"] for q in ("alerts", "poison")}
    queues = {queue_url["alerts"]: "AlertsQueue", queue_url["poison"]: "PoisonQueue"}
    settings = load_settings(environ={}, alerting=receiver_config)
    runtimes: dict[str, AwsRuntime] = {}
    recorders: dict[str, Recorder] = {}
    for handler in FUNCTIONS:
        clients = AwsClients(REGION)
        recorders[handler] = Recorder(names, queues)
        recorders[handler].attach(clients)
        runtimes[handler] = AwsRuntime.create(names, settings, clients, AUDIT_KEY)

    # ingest a burst of failed logins, a quiet partner source, and a poison record
    t0 = time.time() - 3600
    events = [event("login.failed", at=t0 + i, customer_id="cus_a") for i in range(6)]
    events += [event("login.succeeded", at=t0 + 10, customer_id="cus_b", source="partner-x")]
    reply = http_handler(runtimes["ingest"])(http_event("POST /v1/events", PRODUCER, events), None)
    assert reply["statusCode"] == 202
    shared.kinesis.put_record(StreamName=names.stream, Data=b"not an event", PartitionKey="cus_a")
    stream = KinesisSource(shared.kinesis, names.stream, lambda e: process_event(runtimes["process"], e))
    stream.drain()
    # the dispatcher: one 503 (a retry, after a wake-up it sends itself), then the delivery;
    # and a message it cannot read, left on the queue for the retry policy's backoff
    receiver.statuses = [503]
    queue = QueueSource(shared.sqs, queue_url["alerts"], lambda e: dispatch_event(runtimes["dispatch"], e))
    deadline = time.monotonic() + 20
    while len(receiver.received) < 2 and time.monotonic() < deadline:  # the retry's wake-up: a second on
        if not queue.poll():
            time.sleep(0.25)
    assert len(receiver.received) == 2
    shared.sqs.send_message(QueueUrl=queue_url["alerts"], MessageBody="not a message")
    assert queue.poll() == 1
    # the API: list, get, acknowledge, resolve; silences; the notification log
    api = http_handler(runtimes["api"])
    (alert,) = json.loads(api(http_event("GET /v1/alerts", READER), None)["body"])["items"]
    for route, claims in (
        ("GET /v1/alerts/{alert_id}", READER),
        ("POST /v1/alerts/{alert_id}/ack", ANALYST),
        ("POST /v1/alerts/{alert_id}/resolve", ANALYST),
    ):
        assert api(http_event(route, claims, alert_id=alert["id"]), None)["statusCode"] == 200
    listed = api(http_event("GET /v1/alerts", READER, query="customer_id=cus_a"), None)
    assert listed["statusCode"] == 200
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    silence = {"matchers": ["customer_id=cus_z"], "ends_at": ends, "comment": "iam test"}
    created = api(http_event("POST /v1/silences", ANALYST, silence), None)
    assert created["statusCode"] == 201
    assert api(http_event("GET /v1/silences", READER), None)["statusCode"] == 200
    expire = http_event("DELETE /v1/silences/{silence_id}", ANALYST, silence_id=json.loads(created["body"])["id"])
    assert api(expire, None)["statusCode"] == 200
    (notification,) = json.loads(api(http_event("GET /v1/notifications", READER), None)["body"])["items"]
    redrive = http_event(
        "POST /v1/notifications/{notification_id}/redrive", ANALYST, notification_id=notification["id"]
    )
    assert api(redrive, None)["statusCode"] == 404  # sent, not a dead letter: nothing to re-drive
    # the tick: partner-x has been quiet for far longer than 5 minutes
    tick = runtimes["tick"].processor
    tick.clock = lambda: time.time() + 3600
    assert tick.tick().alerts_created == 1

    for handler, function in FUNCTIONS.items():
        calls = recorders[handler].calls
        assert calls, handler
        missing = calls - granted(function)
        assert not missing, f"{function} lacks {sorted(missing)}"
    # and the test did reach the calls that matter
    assert ("sqs:SendMessage", "PoisonQueue") in recorders["process"].calls
    assert ("sqs:ChangeMessageVisibility", "AlertsQueue") in recorders["dispatch"].calls
    assert ("sqs:SendMessage", "AlertsQueue") in recorders["dispatch"].calls
    assert ("sns:Publish", "AlertsTopic") in recorders["api"].calls  # acknowledged, resolved: announced
    assert ("dynamodb:Query", "AlertsTable/index/by_customer") in recorders["dispatch"].calls
    assert ("dynamodb:UpdateItem", "StateTable") in recorders["process"].calls
    assert ("kinesis:PutRecords", "EventsStream") in recorders["ingest"].calls
