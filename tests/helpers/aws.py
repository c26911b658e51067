"""A deployment on the local AWS endpoint, and API Gateway events as the JWT authorizer passes
them on to the HTTP API's Lambda handler."""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from ringfence.runtimes.aws.processor import BatchOutcome, StreamRecord
from ringfence.simulate import Traffic
from tests.helpers.parity import yesterday_at

if TYPE_CHECKING:
    from ringfence.aws_lambda import LambdaHandler
    from ringfence.runtimes.aws.handlers import AwsRuntime
    from ringfence.runtimes.aws.local import KinesisSource, QueueSource
    from ringfence.runtimes.aws.state import Commit

REGION = "us-east-1"
AUDIT_KEY = b"aws-test-audit-key-0123456789abcdef"  # the deployment's RINGFENCE_SECRET_AUDIT_KEY
# The JWT claims of each kind of caller.
PRODUCER = {"sub": "producer-1", "scope": "events:write"}
ANALYST = {"sub": "analyst-1", "scope": "alerts:read alerts:write"}
READER = {"sub": "reader-1", "scope": "alerts:read"}


API_ID = "a1b2c3d4e5"
SOURCE_IP = "198.51.100.7"


def http_event(
    route: str, claims: Mapping[str, Any] | None, body: Any = None, *, query: str = "", **path: str
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for ``route`` ("POST /v1/alerts/{id}/ack",
    its placeholders filled from ``path``), as Lambda receives it: with the claims the JWT
    authorizer verified, or, for ``claims`` None, from a route without the authorizer."""
    method, _, template = route.partition(" ")
    raw_path = re.sub(r"\{(\w+)\}", lambda m: quote(path[m[1]], safe=""), template)
    host = f"{API_ID}.execute-api.{REGION}.amazonaws.com"
    now = time.time()
    context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": API_ID,
        "domainName": host,
        "domainPrefix": API_ID,
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": SOURCE_IP,
            "userAgent": "python-httpx/0.28",
        },
        "requestId": uuid.uuid4().hex[:16],
        "routeKey": route,
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    headers = {
        "content-type": "application/json",
        "host": host,
        "user-agent": "python-httpx/0.28",
        "x-amzn-trace-id": f"Root=1-{int(now):08x}-{uuid.uuid4().hex[:24]}",
        "x-forwarded-for": SOURCE_IP,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if claims is not None:
        headers["authorization"] = "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"  # API Gateway verified it
        context["authorizer"] = {"jwt": {"claims": dict(claims), "scopes": None}}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route,
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": False,
    }
    if path:
        event["pathParameters"] = path
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


@dataclass
class Deployment:
    """One provisioned deployment: its runtime and Lambda's event sources over it."""

    runtime: AwsRuntime
    api: LambdaHandler  # the HTTP API's Lambda handler (ingest's too)
    stream: KinesisSource
    queue: QueueSource
    alerts_queue_url: str
    dead_letters_url: str
    failures: list[dict[str, Any]] = field(default_factory=list)  # the on-failure destination

    def call(self, event: dict[str, Any]) -> dict[str, Any]:
        """The HTTP API's answer to an API Gateway event, as Lambda returns it to API Gateway."""
        return self.api(event, None)

    def send(self, events: list[dict[str, Any]], batch: int = 100) -> None:
        for start in range(0, len(events), batch):
            reply = self.call(http_event("POST /v1/events", PRODUCER, events[start : start + batch]))
            assert reply["statusCode"] == 202, reply
            assert json.loads(reply["body"])["rejected"] == []

    def outcomes(self) -> list[BatchOutcome]:
        """From now on, what each invocation of this runtime's processor did (appended as it returns)."""
        told: list[BatchOutcome] = []
        process = self.runtime.processor.process

        def counted(shard: str, records: list[StreamRecord], deadline: float | None = None) -> BatchOutcome:
            told.append(process(shard, records, deadline))
            return told[-1]

        self.runtime.processor.process = counted  # type: ignore[method-assign]
        return told

    def committed_all(self) -> bool:
        """Whether every shard's progress has reached its last record: each event processed,
        skipped as a retry, or set aside as poison."""
        from ringfence.runtimes.aws.state import sequence_key

        for shard in self.stream.shard_ids():
            last, records = None, self.stream.read(shard)
            while records:
                last = records[-1]["SequenceNumber"]
                records = self.stream.read(shard, after=last)
            if last is not None and self.runtime.state.progress(shard) != sequence_key(last):
                return False
        return True

    def drain_shards_at_once(self, on_commit: Callable[[Commit], None] | None = None) -> int:
        """Process the stream as Lambda does with several shards: each shard on a thread and in
        a container (runtime) of its own, all at once. ``on_commit`` is told of each commit that
        landed. Returns the invocations made."""
        from ringfence.runtimes.aws.handlers import AwsRuntime, process_event
        from ringfence.runtimes.aws.local import KinesisSource, drain_at_once
        from ringfence.runtimes.aws.resources import AwsClients

        sources = []
        for shard in self.stream.shard_ids():
            container = AwsRuntime.create(self.runtime.names, self.runtime.settings, AwsClients(REGION), AUDIT_KEY)
            if on_commit is not None:
                container.state.commit = _telling(container.state.commit, on_commit)  # type: ignore[method-assign]
            sources.append(
                KinesisSource(
                    container.clients.kinesis,
                    self.runtime.names.stream,
                    lambda e, rt=container: process_event(rt, e),
                    self.stream.batch_size,
                    on_failure=self.failures.append,
                    shards=(shard,),
                )
            )
        drain_at_once(sources)
        return sum(source.invocations for source in sources)

    def alerts(self) -> dict[str, tuple[str, int]]:
        from ringfence.alerts.model import AlertQuery

        found: dict[str, tuple[str, int]] = {}
        cursor = None
        while True:
            page, cursor = self.runtime.alerts.list_alerts(AlertQuery(limit=500, cursor=cursor))
            for alert in page:
                assert alert.id not in found
                found[alert.id] = (alert.rule_id, alert.count)
            if cursor is None:
                return found

    def state_rows(self) -> dict[str, Any]:
        """Every engine state, by item key (and name, in a key's item), decoded: equal dicts mean equal state. Only the
        arrival times (and offsets, which are arrival times on aws) in pattern snapshots are left
        out: they differ from run to run."""
        db = self.runtime.clients.dynamodb
        rows: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"TableName": self.runtime.names.state_table}
        while True:
            reply = db.scan(**kwargs)
            for item in reply["Items"]:
                pk = item["pk"]["S"]
                if pk.startswith("s|"):  # a heartbeat's row
                    rows[pk] = _without_arrival(msgspec.msgpack.decode(bytes(item["st"]["B"])))
                elif pk.startswith("k|"):  # a key's item: each state with its deadline (expiries are clock times)
                    for name, (state, deadline, *_) in msgspec.msgpack.decode(bytes(item["st"]["B"])).items():
                        rows[f"{pk}|{name}"] = (_without_arrival(msgspec.msgpack.decode(state)), deadline)
            if "LastEvaluatedKey" not in reply:
                return rows
            kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def queue_messages(self, url: str) -> list[dict[str, Any]]:
        sqs = self.runtime.clients.sqs
        out: list[dict[str, Any]] = []
        while True:
            reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not reply.get("Messages"):
                return out
            out += [json.loads(m["Body"]) for m in reply["Messages"]]


def _telling(
    commit: Callable[[Commit, float], None], told: Callable[[Commit], None]
) -> Callable[[Commit, float], None]:
    def landed(c: Commit, now: float) -> None:
        commit(c, now)
        told(c)

    return landed


def first_commits_together(parties: int = 2) -> Callable[[Commit], None]:
    """A ``before_commit`` hook: each thread's first commit waits until ``parties`` threads
    have loaded the same state and run the engine, so they then race to commit."""
    barrier = threading.Barrier(parties, timeout=30)
    waited: set[int] = set()

    def hook(commit: Commit) -> None:
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait()

    return hook


def _without_arrival(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_arrival(v) for k, v in value.items() if k not in ("ingested_at", "offset")}
    if isinstance(value, list):
        return [_without_arrival(v) for v in value]
    return value


DeploymentFactory = Callable[..., Deployment]  # what the ``deploy`` fixture yields


def stream_record(r: dict[str, Any]) -> StreamRecord:
    """The :class:`StreamRecord` of one record of a Kinesis event as Lambda gets it."""
    k = r["kinesis"]
    return StreamRecord(
        k["sequenceNumber"], k["partitionKey"], base64.b64decode(k["data"]), k["approximateArrivalTimestamp"]
    )


def workload(count: int = 700) -> list[dict[str, Any]]:
    """Events of 60 customers, a fifth of them fraudulent: enough alerts to tell a lost or doubled
    one."""
    traffic = Traffic(seed=5, customers=60, fraud_rate=0.2, source_prefix="exact")
    return list(traffic.stream(start=yesterday_at(21), rate_per_s=20.0, count=count))


def clean_run(deploy: DeploymentFactory, events: list[dict[str, Any]]) -> Deployment:
    """A deployment that took ``events`` with nothing going wrong: what a troubled run must match."""
    clean = deploy(batch_size=50)
    clean.send(events)
    clean.stream.drain()
    assert len(clean.alerts()) >= 20
    return clean


def ingest(runtime: AwsRuntime, events: list[dict[str, Any]], per_request: int = 500) -> None:
    """``events`` through the HTTP API's Lambda handler, as a producer posts them."""
    from ringfence.aws_lambda import http_handler

    api = http_handler(runtime)
    for start in range(0, len(events), per_request):
        reply = api(http_event("POST /v1/events", PRODUCER, events[start : start + per_request]), None)
        assert reply["statusCode"] == 202, reply


HOT_IP = "203.0.113.66"  # TEST-NET-3: an address credential stuffing shares across customers


def with_hot_address(events: list[dict[str, Any]], fraction: float, seed: int) -> list[dict[str, Any]]:
    """``events`` with about ``fraction`` of them replaced by failed logins from HOT_IP, each of
    a customer of the traffic (so spread over every shard), at the replaced event's time."""
    rng = random.Random(seed)
    customers = sorted({e["customer_id"] for e in events if e.get("customer_id")})
    out = []
    for i, event in enumerate(events):
        if event.get("customer_id") and rng.random() < fraction:
            event = {
                "event_id": f"hot-{seed}-{i:08d}",
                "type": "login.failed",
                "occurred_at": event["occurred_at"],
                "source": "mobile-app",
                "customer_id": rng.choice(customers),
                "data": {"device_id": f"dev_{rng.randrange(16**10):010x}", "ip": HOT_IP},
            }
        out.append(event)
    return out
