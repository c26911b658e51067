"""What the HTTP API stands on in the aws runtime: its :class:`~ringfence.api.platform.Platform`.

The API is the same Starlette app as everywhere, served on Lambda (``ringfence.aws_lambda``).
It reads and changes alerts, silences and the notification log in the alerts table (changes
audited there, and the audit trail read from there), and writes ``POST /v1/events`` to Kinesis.
The engine's state and progress live with the stream's consumers, metrics in CloudWatch, the
rule pack in the deployment: every other capability is NotSupported (501).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ringfence.alerts.model import Action, Alert, AlertQuery
from ringfence.clock import Clock, SystemClock
from ringfence.config import Settings
from ringfence.engine.pack import RulePack
from ringfence.errors import FieldError, NotSupported, OverloadedError
from ringfence.events.decode import Rejection, decode_batch
from ringfence.events.fx import FxRate, FxTable, shipped_table
from ringfence.events.model import Event, encode_event
from ringfence.ratelimit import Buckets
from ringfence.runtimes.aws.alerts import AlertTable
from ringfence.runtimes.aws.announcements import OwedAnnouncements, Publish, announcement
from ringfence.runtimes.aws.audit import AuditTrail
from ringfence.runtimes.aws.budgets import DynamoBuckets
from ringfence.runtimes.aws.resources import error_code
from ringfence.runtimes.aws.state import StateTable, event_key
from ringfence.runtimes.ingest import IngestResult, first_of_each

if TYPE_CHECKING:
    from ringfence.runtimes.aws.handlers import AwsRuntime

log = logging.getLogger("ringfence.aws")

PUT_ATTEMPTS = 4  # tries of PutRecords for the records Kinesis refused (throttling)
PUT_BATCH = 500  # PutRecords takes 500 records at most


def not_available(what: str) -> NoReturn:
    raise NotSupported(f"{what} is not available in the aws runtime")


class KinesisIngest:
    """``POST /v1/events``: checked as on every runtime (:func:`~ringfence.events.decode.decode_batch`),
    events already processed reported as duplicates (their partition keys' recent event ids,
    :mod:`.dedup`: eventually consistent, so one processed a moment ago may pass, for the
    processor to skip), the others
    written with PutRecords. Accepted means Kinesis took it: one it still refused after
    retries is rejected with the reason, so the producer resends just that one."""

    def __init__(
        self,
        kinesis: Any,
        stream: str,
        state: StateTable,
        settings: Settings,
        clock: Clock,
        custom_types: Callable[[], frozenset[str]],
        fx: FxTable,
    ) -> None:
        self._kinesis = kinesis
        self._fx = fx
        self._stream = stream
        self._state = state
        self._settings = settings
        self._clock = clock
        self._custom_types = custom_types

    def check_capacity(self, producer: str = "") -> None:
        """Kinesis sheds load itself: a throttled record is retried, then reported."""

    def holding(self, producer: str) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """Nothing to share: an invocation takes one request (Lambda scales out)."""
        return contextlib.nullcontext(lambda size: None)

    def stop_taking(self) -> None:
        """Nothing waits: Lambda ends an invocation, not a server."""

    async def ingest(
        self,
        body: bytes,
        *,
        ndjson: bool,
        sources: frozenset[str] | None,
        producer: str = "",
        gone: Callable[[], Awaitable[None]] | None = None,
    ) -> IngestResult:
        batch = decode_batch(
            body,
            ndjson=ndjson,
            now=self._clock.time(),
            max_events=self._settings.max_batch_events,
            custom_types=self._custom_types(),
            sources=sources,
            fx=self._fx,
        )
        rejected = list(batch.rejected)
        result = IngestResult(rejected=rejected)
        if batch.events:
            indexed = list(zip(batch.indexes, batch.events, strict=True))
            await asyncio.to_thread(self._write, indexed, result, rejected)
        rejected.sort(key=lambda r: r.index)
        return result

    def _write(self, events: list[tuple[int, Event]], result: IngestResult, rejected: list[Rejection]) -> None:
        events, repeats = first_of_each(events, lambda indexed: indexed[1])
        done = self._state.seen([(partition_key(e), event_key(e)) for _, e in events])
        fresh = [(i, e) for i, e in events if event_key(e) not in done]
        duplicates = [e for _, e in events if event_key(e) in done] + [e for _, e in repeats]
        result.duplicate_ids = sorted(e.event_id for e in duplicates)
        result.duplicates = len(result.duplicate_ids)
        failures = put_records(self._kinesis, self._stream, [e for _, e in fresh])
        for (index, e), failure in zip(fresh, failures, strict=True):
            if failure is None:
                result.accepted += 1
            else:
                rejected.append(Rejection(index, e.event_id, [FieldError("$", f"not written, retry it: {failure}")]))
        if failures and result.accepted == 0 and result.duplicates == 0:
            reason = next(f for f in failures if f is not None)
            raise OverloadedError(f"the stream took none of the events ({reason}); retry later", 1)


def put_records(kinesis: Any, stream: str, events: list[Event]) -> list[str | None]:
    """Write ``events`` keyed by :func:`partition_key`; per event None, or why it failed."""
    outcome: list[str | None] = ["not attempted"] * len(events)
    pending = list(range(len(events)))
    for attempt in range(PUT_ATTEMPTS):
        if not pending:
            break
        if attempt:
            time.sleep(0.05 * 2**attempt)
        still: list[int] = []
        for start in range(0, len(pending), PUT_BATCH):
            part = pending[start : start + PUT_BATCH]
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


class AnnouncedAlerts:
    """The alerts table as the API changes alerts: each acknowledgement and resolution that
    changes the alert is announced on the alerts topic for the dispatcher, as the processor
    announces new alerts (receivers told of an alert are told it is resolved). The announcement
    is owed in the change's transaction (:mod:`.announcements`): a failed publish is logged, not
    the request's failure, and the tick publishes it."""

    def __init__(self, table: AlertTable, announce: Publish) -> None:
        self._table = table
        self._owed = OwedAnnouncements(table, announce)

    def list_alerts(self, query: AlertQuery) -> tuple[list[Alert], str | None]:
        return self._table.list_alerts(query)

    def get_alert(self, alert_id: str) -> Alert:
        return self._table.get_alert(alert_id)

    def transition(self, alert_id: str, action: Action, actor: str, reason: str, now: float) -> Alert:
        change = self._owed.transition(alert_id, action, actor, reason, now)
        alert = self._table.get_alert(alert_id)
        if change is not None:
            self._owed.hand_on(announcement(change, alert.id, alert.rule_id, alert.severity, alert.audience), now)
        return alert


class AwsRecords:
    """What the API reads beside alerts: the audit trail; late events and hit counts stay
    with the stream's consumers (NotSupported)."""

    def __init__(self, audit: AuditTrail) -> None:
        self._audit = audit

    def list_audit(self, limit: int, cursor: int | None) -> tuple[list[dict[str, Any]], int | None]:
        return self._audit.list_audit(limit, cursor)

    def list_late_events(self, limit: int, cursor: int | None) -> NoReturn:
        not_available("the late events (counted in the processor's log, not listed)")

    def count_late_events(self) -> NoReturn:
        not_available("the late events (counted in the processor's log, not listed)")

    def rule_hits(self, since: float | None = None) -> NoReturn:
        not_available("the rule pack's hit counts")


class AwsPlatform:
    """The API's platform over one container's :class:`~ringfence.runtimes.aws.handlers.AwsRuntime`.
    Nothing to start or stop: every request reads and writes AWS directly."""

    runtime = "aws"
    ready = accepting = True
    triage = None
    log = None
    quarantine = None
    stream = None
    metrics = None

    def __init__(self, rt: AwsRuntime, clock: Clock | None = None) -> None:
        self.settings = rt.settings
        self.clock = clock or SystemClock()
        self.pack = rt.pack
        self.alerts = AnnouncedAlerts(rt.alerts, rt.announce)
        self.silences = self.notifications = self._alerts = rt.alerts
        self.records = AwsRecords(rt.alerts.audit)
        s = rt.settings
        self.fx = shipped_table(s.fx_rates, s.reference_currency, s.fx_max_age_days, self.clock.time())
        self.ingest = KinesisIngest(
            rt.clients.kinesis, rt.names.stream, rt.state, s, self.clock, lambda: self.pack.custom_types, self.fx
        )

    def notification_redriven(self) -> None:
        """Nothing to wake from here: the dispatcher sends what is due at its next step (its next
        message, or the scheduled tick)."""

    def processed_offset(self) -> NoReturn:
        not_available("the stream's progress")

    def unready_reason(self) -> None:
        return None  # readiness is not served here (no log): Lambda and API Gateway route

    def changes_refused(self) -> None:
        return None  # DynamoDB has no disk to fill

    def budget(self, kind: str, rate: float, burst: float) -> Buckets:
        return DynamoBuckets(self._alerts, kind, rate, burst, self.clock)  # one for every container

    def lag(self) -> NoReturn:
        not_available("the stream's progress")

    def shared_totals(self) -> NoReturn:
        not_available("statistics")

    def customer_features(self, customer_id: str) -> NoReturn:
        not_available("feature values")

    def fx_table(self) -> FxTable:
        return self.fx

    def load_fx(self, rates: list[FxRate], actor: str, now: float) -> NoReturn:
        not_available("loading FX rates (they ship with the deployment: the fx_rates setting)")

    def active_pack(self) -> NoReturn:
        not_available("the rule pack (it ships with the deployment)")

    def check_pack(self, pack: RulePack) -> NoReturn:
        not_available("changing the rule pack (it ships with the deployment)")

    def dropped_state(self, pack: RulePack) -> NoReturn:
        not_available("changing the rule pack (it ships with the deployment)")

    def activate_pack(self, pack: RulePack, actor: str, now: float) -> NoReturn:
        not_available("changing the rule pack (it ships with the deployment)")

    def list_values(self, name: str) -> NoReturn:
        not_available("lists (they ship with the deployment's rule pack)")

    def put_list(self, name: str, values: list[str], actor: str, now: float) -> NoReturn:
        not_available("lists (they ship with the deployment's rule pack)")

    async def backtest(self, candidate: RulePack, limit: int, actor: str, on_exit: Callable[[], None]) -> NoReturn:
        not_available("a rule back-test")

    def redrive_quarantined(self, entry_id: int, actor: str) -> NoReturn:
        not_available("the quarantine (poison records go to the poison queue)")

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""
