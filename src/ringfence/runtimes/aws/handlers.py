"""What the aws runtime's Lambda functions run: the :class:`AwsRuntime` each container builds
once from the environment (:func:`runtime`), and the ``*_event`` functions of the stream, the
alerts queue and the schedule, which take the runtime explicitly (what the local event-source
poller and the tests call). The entry points ``deploy/aws/template.yaml`` names, the HTTP API's
among them, are in :mod:`ringfence.aws_lambda`.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.alerts.config import load_alerting
from ringfence.config import Settings, audit_key, load_settings
from ringfence.engine.pack import RulePack, load_pack_file
from ringfence.errors import ConfigError, StoreError
from ringfence.runtimes.aws.alerts import AlertTable
from ringfence.runtimes.aws.announcements import Announcer, OwedAnnouncements
from ringfence.runtimes.aws.dispatch import AlertDispatcher
from ringfence.runtimes.aws.metrics import emit
from ringfence.runtimes.aws.processor import BatchOutcome, ShardProcessor, StreamRecord
from ringfence.runtimes.aws.resources import AwsClients, AwsNames
from ringfence.runtimes.aws.state import StateTable, heartbeat_names

log = logging.getLogger("ringfence.aws")

_json = msgspec.json.Encoder()


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
    owed: OwedAnnouncements

    @classmethod
    def create(
        cls, names: AwsNames, settings: Settings, clients: AwsClients | None = None, audit_key: bytes | None = None
    ) -> AwsRuntime:
        """``audit_key`` keys the audit trail's chain, which every change people make is
        written to: without it the runtime is not built (ConfigError)."""
        if not audit_key:
            raise ConfigError(
                "the aws runtime needs an audit key: set RINGFENCE_SECRET_AUDIT_KEY (64 hex digits; "
                "deploy/aws/template.yaml's AuditKey parameter)"
            )
        clients = clients or AwsClients()
        # the deployment's own file, checked by `ringfence rules check` before `sam deploy`: a cold
        # start does not refuse it for checks added since (a release must not take a deployment down)
        pack = load_pack_file(settings.rule_pack, stored=True)
        state = StateTable(clients.dynamodb, names.state_table, heartbeat_names(pack))
        alerts = AlertTable(clients.dynamodb, names.alerts_table, audit_key)

        announce = Announcer(clients.sns, names.alerts_topic_arn)
        processor = ShardProcessor(
            pack,
            state,
            alerts,
            announce,
            PoisonQueue(clients.sqs, names.poison_queue_url),
            allowed_lateness_s=settings.allowed_lateness_s,
            engine_kind=settings.engine,
        )
        dispatcher = AlertDispatcher(alerts, load_alerting(settings.alerting), auto_resolve=lambda: pack.auto_resolve)
        owed = OwedAnnouncements(alerts, announce)
        return cls(names, clients, settings, pack, state, alerts, processor, dispatcher, announce, owed)


_runtime: AwsRuntime | None = None


def runtime() -> AwsRuntime:
    """The container's runtime, from ``RINGFENCE_AWS_*`` names, the usual settings and
    ``RINGFENCE_SECRET_AUDIT_KEY``."""
    global _runtime
    if _runtime is None:
        _runtime = AwsRuntime.create(AwsNames.from_env(), load_settings(), audit_key=audit_key())
    return _runtime


# -- the stream, the queue, the schedule ------------------------------------------------------------


def process_event(rt: AwsRuntime, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
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
    outcome = rt.processor.process(shard, batch, deadline_of(context))
    log.info(
        "shard %s: %d processed, %d late, %d skipped, %d poison, %d conflicts, %d alerts, %d alerts' hits waiting",
        shard,
        outcome.processed,
        outcome.late,
        outcome.skipped,
        outcome.poison,
        outcome.conflicts,
        outcome.alerts_created,
        outcome.alerts_waiting,
    )
    counts = {
        "EventsProcessed": outcome.processed,
        "Conflicts": outcome.conflicts,
        "AlertsCreated": outcome.alerts_created,
        "AlertsWaiting": outcome.alerts_waiting,
    }
    emit(rt.names.stream, "process", counts, time.time())
    failures = [{"itemIdentifier": outcome.failed_sequence}] if outcome.failed_sequence else []
    return {"batchItemFailures": failures}


def deadline_of(context: Any) -> float | None:
    """When Lambda stops the invocation, in :func:`time.monotonic` seconds (None: no context)."""
    if context is None:
        return None
    return time.monotonic() + float(context.get_remaining_time_in_millis()) / 1000


def dispatch_event(rt: AwsRuntime, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """SQS messages (SNS raw delivery) announcing alert changes: see
    :meth:`~ringfence.runtimes.aws.dispatch.AlertDispatcher.handle_queue_event`. ``context``:
    the Lambda context, whose time left bounds the notifications sent."""
    return rt.dispatcher.handle_queue_event(event, rt.clients.sqs, deadline_of(context))


def tick_event(rt: AwsRuntime, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The schedule: fire absence timers that wall-clock time made due, then step the alert
    pipeline (what no delayed wake-up covers: repeat intervals beyond SQS's 15-minute delay,
    a wake-up lost with a crashed invocation; and auto-resolve), then publish the alert
    changes still owed their announcement."""
    started, outcome = time.time(), BatchOutcome()
    try:
        rt.processor.tick(outcome)
    except Exception:  # the pipeline's step and what is owed go on; the invocation fails after
        log.exception("the tick's timers failed")
        failed = True
    else:
        failed = False
    # what it applied of the hits left waiting counts even when its timers failed; stamped
    # with its start, so each minute's tick lands in its own minute
    emit(
        rt.names.stream,
        "tick",
        {"AlertsCreated": outcome.alerts_created, "AlertsWaiting": outcome.alerts_waiting},
        started,
    )
    try:
        rt.dispatcher.step(deadline_of(context))
    except Exception:  # the timers are committed; the next tick or wake-up steps again
        log.exception("the tick's step of the alert pipeline failed")
    owed = rt.owed.publish_owed(rt.dispatcher.stages.clock.time())
    if failed:
        raise StoreError("the tick's timers failed (logged above); the next tick tries again")
    return {"commits": outcome.commits, "alerts_created": outcome.alerts_created, "announced": owed}
