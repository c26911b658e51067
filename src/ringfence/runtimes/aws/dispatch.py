"""The alert pipeline of the aws runtime: the embedded runtime's
:class:`~ringfence.alerts.dispatcher.Dispatcher` (mute, group, flush, deliver with retries
and dead letters) over the alerts table (:class:`~.pipeline.AwsPipeline`), driven by SQS.

The alerts queue carries the alert changes announced on SNS and the dispatcher's own
wake-ups. Each batch of messages becomes the pipeline's outbox; a step of the dispatcher
takes it, flushes the groups that are due, sends the notifications that are due (as many as
the invocation's time left allows: see :class:`~ringfence.alerts.stages.Deliver`) and, every
few seconds, resolves quiet alerts of detections with ``auto_resolve``. A
message whose change was not taken stays on the queue, hidden for the retry policy's backoff
(after the queue's ``maxReceiveCount`` it lands in the dead-letter queue). Then the
dispatcher schedules a wake-up message, delayed until the next group flush or notification
retry is due as stored (SQS delays 15 minutes at most), and by at least a second, doubling
while the same due time comes back (a flush that keeps failing); the scheduled tick steps
too, for longer waits (``repeat_interval``) and a lost wake-up.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import msgspec

from ringfence.alerts.config import AlertingConfig
from ringfence.alerts.delivery import retry_delay
from ringfence.alerts.dispatcher import Dispatcher
from ringfence.alerts.model import AlertChange
from ringfence.alerts.notify import Notifier
from ringfence.clock import Clock, SystemClock
from ringfence.metrics import Metrics
from ringfence.runtimes.aws.alerts import AlertTable
from ringfence.runtimes.aws.pipeline import AwsPipeline, LostRace
from ringfence.runtimes.aws.resources import error_code

log = logging.getLogger("ringfence.aws.dispatch")

MAX_WAKE_DELAY_S = 900  # SQS's longest message delay; the tick covers longer waits
MIN_WAKE_DELAY_S = 1.0  # a wake-up for what is due already: the backoff's first step
STEPS = 4  # passes of one invocation: a lost race is read again, auto-resolved alerts taken
WAKE = "wake"


class QueueMessage(msgspec.Struct):
    """A message of the alerts queue: an alert's change (the processor's and the API's
    announcements), or a wake-up."""

    change: str
    alert_id: str = ""


_decoder = msgspec.json.Decoder(QueueMessage)


def _queue_url(sqs: Any, arn: str) -> str:
    """The URL of the queue ``arn`` names, at the endpoint the client uses."""
    _, _, _, _, account, name = arn.split(":")
    return f"{sqs.meta.endpoint_url.rstrip('/')}/{account}/{name}"


class AlertDispatcher:
    """One per container: :meth:`handle_queue_event` takes a batch of the alerts queue (the
    dispatch Lambda), :meth:`step` does what is due (the tick)."""

    def __init__(
        self,
        alerts: AlertTable,
        config: AlertingConfig,
        *,
        clock: Clock | None = None,
        client: httpx.Client | None = None,
        auto_resolve: Callable[[], Mapping[str, float]] = dict,
    ) -> None:
        """``auto_resolve``: the quiet period (seconds) after which each rule's alerts resolve."""
        self.alerts = alerts
        self.config = config
        self.pipeline = AwsPipeline(alerts)
        self.stages = Dispatcher(
            self.pipeline, config, clock or SystemClock(), Metrics(), auto_resolve=auto_resolve, client=client
        )
        self._rng = random.Random()  # nosec B311 # noqa: S311 - backoff jitter, not security
        self._overdue: tuple[float, float] | None = None  # a past due time woken for, and its delay

    @property
    def notifiers(self) -> dict[str, Notifier]:
        return self.stages.notifiers

    def handle_queue_event(self, event: Mapping[str, Any], sqs: Any, deadline: float | None = None) -> dict[str, Any]:
        """The dispatch Lambda: SQS messages (SNS raw delivery), ``ReportBatchItemFailures``.
        ``deadline``: see :meth:`step`."""
        records = event.get("Records") or []
        taken: dict[str, int] = {}  # message id -> its change's seq in the outbox
        failures: list[Mapping[str, Any]] = []
        for record in records:
            try:
                message = _decoder.decode(record["body"])
                if message.change != WAKE:
                    taken[record["messageId"]] = self.pipeline.receive(message.alert_id, AlertChange(message.change))
            except (msgspec.DecodeError, ValueError):
                log.warning("message %s is no alert change; left for the dead-letter queue", record["messageId"])
                failures.append(record)
        try:
            due = self.step(deadline)
        except Exception:
            log.exception("the dispatcher's step failed; its messages are tried again")
            due = None
        failures += [r for r in records if taken.get(r["messageId"], 0) > self.pipeline.consumed]
        self.pipeline.release()  # what was not taken goes back to the queue
        for record in failures:
            self._hide(sqs, record)
        if records and due is not None:
            self._wake(sqs, records[0]["eventSourceARN"], due)
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in failures]}

    def _wake(self, sqs: Any, queue_arn: str, due: float) -> None:
        """Send the queue a wake-up delayed until ``due``, unless one by then is already on its way."""
        now = self.stages.clock.time()
        at = self._wake_at(due, now)
        try:
            if at - now <= MAX_WAKE_DELAY_S and self.alerts.schedule_wake(at, now):
                sqs.send_message(
                    QueueUrl=_queue_url(sqs, queue_arn),
                    MessageBody=msgspec.json.encode(QueueMessage(WAKE)).decode(),
                    DelaySeconds=math.ceil(at - now),
                )
        except Exception as exc:  # the tick steps the dispatcher anyway
            log.warning("could not schedule the dispatcher's wake-up: %s", error_code(exc) or exc)

    def _wake_at(self, due: float, now: float) -> float:
        """When to wake for ``due``: then, or, if it is past (a step left it due: no time left,
        a claim held, a failing write), after a backoff doubling while it stays the same."""
        if due > now:
            self._overdue = None
            return due
        if self._overdue is not None and self._overdue[0] == due:
            self._overdue = (due, min(self._overdue[1] * 2, MAX_WAKE_DELAY_S))
        else:
            self._overdue = (due, MIN_WAKE_DELAY_S)
        return now + self._overdue[1]

    def step(self, deadline: float | None = None) -> float | None:
        """Take the outbox, flush what is due, deliver what is due (claiming none whose send
        would not end by ``deadline``, :func:`time.monotonic` seconds, when the invocation is
        stopped); return when the next thing is due (None: nothing waits)."""
        for _ in range(STEPS):
            try:
                self.stages.step(deadline)
            except LostRace as exc:
                log.info("%s", exc)
                continue
            if not self.pipeline.pending():
                break
        return self.pipeline.next_due()

    def _hide(self, sqs: Any, record: Mapping[str, Any]) -> None:
        receives = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            sqs.change_message_visibility(
                QueueUrl=_queue_url(sqs, record["eventSourceARN"]),
                ReceiptHandle=record["receiptHandle"],
                VisibilityTimeout=math.ceil(retry_delay(self.config.retry, receives, None, self._rng)),
            )
        except Exception as exc:  # the queue's visibility timeout applies instead
            log.warning("could not set the retry delay of %s: %s", record["messageId"], error_code(exc) or exc)

    def close(self) -> None:
        self.stages.close()
