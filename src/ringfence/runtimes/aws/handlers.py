"""The Lambda entry points of the aws runtime (``deploy/aws/template.yaml`` names them).

Each handler builds its :class:`AwsRuntime` once per container from the environment, and
hands the event to a ``*_event`` function that takes the runtime explicitly (what the local
event-source poller and the tests call).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request

from ringfence.alerts.config import load_alerting
from ringfence.alerts.model import STATUSES, Action, AlertQuery
from ringfence.alerts.silences import SilenceError, check_silence
from ringfence.api.params import choice_params, int_param, parse_time, text_param, time_param
from ringfence.config import Settings, load_settings
from ringfence.engine.pack import RulePack, load_pack_file
from ringfence.engine.rules import AUDIENCES, SEVERITIES
from ringfence.errors import FieldError, NotFound, RequestError, StoreError
from ringfence.events.decode import MalformedBody, Rejection, TooManyEvents, decode_batch
from ringfence.events.model import Event, encode_event
from ringfence.runtimes.aws.alerts import AlertTable
from ringfence.runtimes.aws.dispatch import AlertDispatcher
from ringfence.runtimes.aws.processor import ShardProcessor, StreamRecord, resolved_message
from ringfence.runtimes.aws.resources import AwsClients, AwsNames, error_code
from ringfence.runtimes.aws.state import StateTable, event_key

log = logging.getLogger("ringfence.aws")

PUT_ATTEMPTS = 4  # tries of PutRecords for the records Kinesis refused (throttling)
JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson",)
_json = msgspec.json.Encoder()
_SECURITY_HEADERS = {
    "content-type": "application/json",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "strict-transport-security": "max-age=63072000; includeSubDomains",
}


class PoisonQueue:
    """Sends poison records to the poison queue, with the reason and the record itself."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url

    def send(self, shard: str, record: StreamRecord, reason: str) -> None:
        log.warning("shard %s: poison record %s: %s", shard, record.sequence, reason)
        body = {
            "reason": reason,
            "shard": shard,
            "sequence_number": record.sequence,
            "partition_key": record.partition_key,
            "arrived_at": record.arrived_at,
            "data_base64": base64.b64encode(record.data).decode(),
        }
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=_json.encode(body).decode())


class Announcer:
    """Publishes alert changes on the alerts topic (severity, audience and rule as message
    attributes, for subscription filter policies)."""

    def __init__(self, sns: Any, topic_arn: str) -> None:
        self.sns = sns
        self.topic_arn = topic_arn

    def __call__(self, message: dict[str, Any]) -> None:
        self.sns.publish(
            TopicArn=self.topic_arn,
            Message=_json.encode(message).decode(),
            MessageAttributes={
                key: {"DataType": "String", "StringValue": str(message[key])}
                for key in ("severity", "audience", "rule_id")
            },
        )


@dataclass
class AwsRuntime:
    """Everything a handler needs, built once per container."""

    names: AwsNames
    clients: AwsClients
    settings: Settings
    pack: RulePack
    state: StateTable
    alerts: AlertTable
    processor: ShardProcessor
    dispatcher: AlertDispatcher
    announce: Announcer

    @classmethod
    def create(cls, names: AwsNames, settings: Settings, clients: AwsClients | None = None) -> AwsRuntime:
        clients = clients or AwsClients()
        pack = load_pack_file(settings.rule_pack)
        state = StateTable(clients.dynamodb, names.state_table)
        alerts = AlertTable(clients.dynamodb, names.alerts_table)

        announce = Announcer(clients.sns, names.alerts_topic_arn)
        processor = ShardProcessor(
            pack,
            state,
            alerts,
            announce,
            PoisonQueue(clients.sqs, names.poison_queue_url),
            allowed_lateness_s=settings.allowed_lateness_s,
        )
        dispatcher = AlertDispatcher(alerts, load_alerting(settings.alerting))
        return cls(names, clients, settings, pack, state, alerts, processor, dispatcher, announce)


_runtime: AwsRuntime | None = None


def runtime() -> AwsRuntime:
    """The container's runtime, from ``RINGFENCE_AWS_*`` names and the usual settings."""
    global _runtime
    if _runtime is None:
        _runtime = AwsRuntime.create(AwsNames.from_env(), load_settings())
    return _runtime


# -- HTTP (API Gateway HTTP API, payload format 2.0) -------------------------------------------------


def _response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**_SECURITY_HEADERS, **(headers or {})},
        "body": _json.encode(body).decode(),
    }


def _error(status: int, code: str, message: str, details: Any = None, **headers: str) -> dict[str, Any]:
    return _response(status, {"error": {"code": code, "message": message, "details": details}}, headers)


SOURCES_CLAIM = "ringfence_sources"  # the event sources a producer may write (absent: any)


@dataclass(frozen=True)
class Caller:
    subject: str
    scopes: frozenset[str]
    sources: frozenset[str] | None = None  # None: not bound to sources


def _claim_values(value: object) -> frozenset[str] | None:
    """A list claim: a JSON list, or the "[a b]" / "a b" / "a,b" string API Gateway passes on."""
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    if isinstance(value, str):
        return frozenset(value.strip("[]").replace(",", " ").split())
    return None


def caller_of(event: Mapping[str, Any]) -> Caller | None:
    """Who called, from the JWT authorizer's verified claims (API Gateway checked the token)."""
    jwt = event.get("requestContext", {}).get("authorizer", {}).get("jwt")
    if not isinstance(jwt, dict):
        return None
    claims = jwt.get("claims") or {}
    scopes = set(jwt.get("scopes") or [])
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(str(v) for v in value)
    subject = claims.get("sub")
    sources = _claim_values(claims.get(SOURCES_CLAIM)) if SOURCES_CLAIM in claims else None
    return Caller(str(subject), frozenset(scopes), sources) if subject else None


def _authorize(event: Mapping[str, Any], scope: str) -> Caller | dict[str, Any]:
    caller = caller_of(event)
    if caller is None:
        return _error(401, "unauthorized", "no verified caller: the route must have the JWT authorizer")
    if scope not in caller.scopes and "admin" not in caller.scopes:
        return _error(403, "forbidden", f"this needs the {scope} scope", {"required_scope": scope})
    return caller


def _body(event: Mapping[str, Any]) -> bytes:
    raw = event.get("body") or ""
    return base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode()


def ingest_event(rt: AwsRuntime, event: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /v1/events``: validate exactly like the embedded API, then PutRecords.

    202 only for events Kinesis accepted; one it still refused after retries is reported
    in ``rejected`` with the reason, so the producer resends just that one.
    """
    caller = _authorize(event, "events:write")
    if not isinstance(caller, Caller):
        return caller
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES + NDJSON_TYPES:
        return _error(
            415, "unsupported_media_type", "send application/json or application/x-ndjson", {"content_type": media_type}
        )
    body = _body(event)
    if len(body) > rt.settings.max_body_bytes:
        return _error(413, "payload_too_large", f"the body is over {rt.settings.max_body_bytes} bytes")
    try:
        batch = decode_batch(
            body,
            ndjson=media_type in NDJSON_TYPES,
            now=time.time(),
            max_events=rt.settings.max_batch_events,
            custom_types=rt.pack.custom_types,
            sources=caller.sources,
        )
    except TooManyEvents as exc:
        return _error(413, "too_many_events", str(exc), {"events": exc.count, "limit": exc.limit})
    except MalformedBody as exc:
        return _error(400, "malformed_body", str(exc), {"errors": [e.to_dict() for e in exc.errors]})
    rejected = list(batch.rejected)
    done = rt.state.processed([event_key(e) for e in batch.events]) if batch.events else set()
    fresh = [(i, e) for i, e in zip(batch.indexes, batch.events, strict=True) if event_key(e) not in done]
    duplicates = sorted(e.event_id for e in batch.events if event_key(e) in done)
    failures = put_records(rt.clients.kinesis, rt.names.stream, [e for _, e in fresh])
    for (index, e), failure in zip(fresh, failures, strict=True):
        if failure is not None:
            rejected.append(Rejection(index, e.event_id, [FieldError("$", f"not written, retry it: {failure}")]))
    result = {
        "accepted": sum(1 for f in failures if f is None),
        "duplicates": len(duplicates),
        "duplicate_event_ids": duplicates,
        "rejected": [r.to_dict() for r in sorted(rejected, key=lambda r: r.index)],
    }
    if result["accepted"] == 0 and not duplicates:
        if any(f is not None for f in failures):
            return _error(
                503, "unavailable", "the stream refused the events; retry later", result, **{"retry-after": "1"}
            )
        return _error(400, "invalid_events", "no valid event in the request", result)
    return _response(202, result)


def put_records(kinesis: Any, stream: str, events: list[Event]) -> list[str | None]:
    """Write ``events`` with the customer as partition key; per event None, or why it failed."""
    outcome: list[str | None] = ["not attempted"] * len(events)
    pending = list(range(len(events)))
    for attempt in range(PUT_ATTEMPTS):
        if not pending:
            break
        if attempt:
            time.sleep(0.05 * 2**attempt)
        still: list[int] = []
        for start in range(0, len(pending), 500):  # PutRecords takes 500 records at most
            part = pending[start : start + 500]
            try:
                reply = kinesis.put_records(
                    StreamName=stream,
                    Records=[{"Data": encode_event(events[i]), "PartitionKey": partition_key(events[i])} for i in part],
                )
            except Exception as exc:  # the whole call failed (throttled, unreachable): all of it again
                reason = error_code(exc) or type(exc).__name__
                log.warning("PutRecords failed: %s", reason)
                for i in part:
                    outcome[i] = f"{reason}: the stream did not take it"
                still += part
                continue
            for i, entry in zip(part, reply["Records"], strict=True):
                if "ErrorCode" in entry:
                    outcome[i] = f"{entry['ErrorCode']}: {entry.get('ErrorMessage', '')}"
                    still.append(i)
                else:
                    outcome[i] = None
        pending = still
    return outcome


def partition_key(event: Event) -> str:
    """The customer (or, for API telemetry, the service): the same key as the embedded log's."""
    return str(event.customer_id or event.data.get("service") or "-")


def _query_request(event: Mapping[str, Any]) -> Request:
    """What the shared query-parameter checks read: only ``query_params``."""
    return cast(Request, SimpleNamespace(query_params=QueryParams(str(event.get("rawQueryString") or ""))))


_API_SCOPES = {
    "GET /v1/alerts": "alerts:read",
    "GET /v1/alerts/{id}": "alerts:read",
    "POST /v1/alerts/{id}/ack": "alerts:write",
    "POST /v1/alerts/{id}/resolve": "alerts:write",
    "POST /v1/silences": "alerts:write",
}


def api_event(rt: AwsRuntime, event: Mapping[str, Any]) -> dict[str, Any]:
    """The alerts API: list, get, acknowledge, resolve, and silences."""
    route = str(event.get("routeKey", ""))
    if route not in _API_SCOPES:
        return _error(404, "not_found", f"no route {route!r}")
    caller = _authorize(event, _API_SCOPES[route])
    if not isinstance(caller, Caller):
        return caller
    alert_id = str((event.get("pathParameters") or {}).get("id", ""))
    try:
        if route == "GET /v1/alerts":
            request = _query_request(event)
            query = AlertQuery(
                status=choice_params(request, "status", STATUSES),
                severity=choice_params(request, "severity", SEVERITIES),
                audience=choice_params(request, "audience", AUDIENCES),
                rule_id=text_param(request, "rule_id"),
                customer_id=text_param(request, "customer_id"),
                since=time_param(request, "since"),
                until=time_param(request, "until"),
                limit=int_param(request, "limit", 50, 1, 500) or 50,
            )
            alerts, cursor = rt.alerts.list_alerts(query, request.query_params.get("cursor"))
            return _response(200, {"items": [msgspec.to_builtins(a) for a in alerts], "next_cursor": cursor})
        if route == "GET /v1/alerts/{id}":
            return _response(200, msgspec.to_builtins(rt.alerts.get_alert(alert_id)))
        if route == "POST /v1/silences":
            return _response(201, _create_silence(rt, event, caller))
        action = Action.ACKNOWLEDGE if route.endswith("/ack") else Action.RESOLVE
        alert = rt.alerts.transition(alert_id, action, caller.subject, _reason(event), time.time())
        if action is Action.RESOLVE:  # the receivers told of it are told it is resolved
            rt.announce(resolved_message(alert.id, alert.rule_id, alert.severity, alert.audience))
        return _response(200, msgspec.to_builtins(alert))
    except RequestError as exc:
        return _error(exc.status, exc.code, str(exc), exc.details)
    except NotFound as exc:
        return _error(404, "not_found", str(exc))
    except StoreError as exc:
        return _error(409, "conflict", str(exc))


class _ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


class _SilenceBody(msgspec.Struct, forbid_unknown_fields=True):
    matchers: list[str]
    ends_at: str
    comment: str
    starts_at: str | None = None


def _reason(event: Mapping[str, Any]) -> str:
    body = _body(event)
    if not body.strip():
        return ""
    try:
        reason = msgspec.json.decode(body, type=_ReasonBody).reason
    except msgspec.DecodeError as exc:
        raise RequestError(400, "invalid_body", f"body: {exc}") from None
    if len(reason) > 1000:
        raise RequestError(400, "invalid_body", "reason must be at most 1000 characters")
    return reason


def _create_silence(rt: AwsRuntime, event: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(_body(event), type=_SilenceBody)
    except msgspec.DecodeError as exc:
        raise RequestError(400, "invalid_body", f"body: {exc}") from None
    now = time.time()
    starts = parse_time(body.starts_at) if body.starts_at else now
    ends = parse_time(body.ends_at)
    if starts is None or ends is None:
        raise RequestError(400, "invalid_body", "starts_at and ends_at must be RFC 3339 times with offset")
    try:
        check_silence(body.matchers, starts, ends, body.comment)
    except SilenceError as exc:
        raise RequestError(400, "invalid_body", str(exc)) from None
    silence = rt.alerts.create_silence(body.matchers, starts, ends, caller.subject, body.comment, now)
    return silence.to_dict(now)


# -- the stream, the queue, the schedule ------------------------------------------------------------


def process_event(rt: AwsRuntime, event: Mapping[str, Any]) -> dict[str, Any]:
    """A Kinesis batch (one shard). Reports the first record not committed, if any."""
    records = event.get("Records") or []
    if not records:
        return {"batchItemFailures": []}
    shard = str(records[0]["eventID"]).split(":", 1)[0]
    batch = [
        StreamRecord(
            r["kinesis"]["sequenceNumber"],
            r["kinesis"]["partitionKey"],
            base64.b64decode(r["kinesis"]["data"]),
            float(r["kinesis"]["approximateArrivalTimestamp"]),
        )
        for r in records
    ]
    outcome = rt.processor.process(shard, batch)
    log.info(
        "shard %s: %d processed, %d late, %d skipped, %d poison, %d conflicts, %d alerts",
        shard,
        outcome.processed,
        outcome.late,
        outcome.skipped,
        outcome.poison,
        outcome.conflicts,
        outcome.alerts_created,
    )
    failures = [{"itemIdentifier": outcome.failed_sequence}] if outcome.failed_sequence else []
    return {"batchItemFailures": failures}


def dispatch_event(rt: AwsRuntime, event: Mapping[str, Any]) -> dict[str, Any]:
    """SQS messages (SNS raw delivery) announcing alerts. A message a receiver asked to retry
    stays on the queue, hidden for the retry policy's backoff."""
    failures = []
    for record in event.get("Records") or []:
        message_id = record["messageId"]
        try:
            body = msgspec.json.decode(record["body"])
            if isinstance(body, dict) and body.get("Type") == "Notification":  # not raw delivery
                body = msgspec.json.decode(body["Message"])
            outcome = rt.dispatcher.handle(body)
        except Exception:
            log.exception("dispatch of message %s failed", message_id)
            outcome = "retry"
        if outcome == "retry":
            failures.append({"itemIdentifier": message_id})
            receives = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
            queue_url = _queue_url(record.get("eventSourceARN", ""))
            if queue_url and record.get("receiptHandle"):
                try:
                    rt.clients.sqs.change_message_visibility(
                        QueueUrl=queue_url,
                        ReceiptHandle=record["receiptHandle"],
                        VisibilityTimeout=rt.dispatcher.retry_delay(receives),
                    )
                except Exception as exc:  # the default visibility timeout applies instead
                    log.warning("could not set the retry delay of %s: %s", message_id, error_code(exc) or exc)
    return {"batchItemFailures": failures}


def _queue_url(arn: str) -> str | None:
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
    base = endpoint.rstrip("/") if endpoint else f"https://sqs.{parts[3]}.amazonaws.com"
    return f"{base}/{parts[4]}/{parts[5]}"


def tick_event(rt: AwsRuntime, event: Mapping[str, Any]) -> dict[str, Any]:
    """The schedule: fire absence timers that wall-clock time made due."""
    outcome = rt.processor.tick()
    return {"commits": outcome.commits, "alerts_created": outcome.alerts_created}


# -- Lambda entry points ---------------------------------------------------------------------------


def ingest(event: dict[str, Any], context: object) -> dict[str, Any]:
    return ingest_event(runtime(), event)


def api(event: dict[str, Any], context: object) -> dict[str, Any]:
    return api_event(runtime(), event)


def process(event: dict[str, Any], context: object) -> dict[str, Any]:
    return process_event(runtime(), event)


def dispatch(event: dict[str, Any], context: object) -> dict[str, Any]:
    return dispatch_event(runtime(), event)


def tick(event: dict[str, Any], context: object) -> dict[str, Any]:
    return tick_event(runtime(), event)
