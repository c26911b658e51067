"""The alert pipeline on SQS: each message announces a new alert; the dispatcher mutes it
(silences, inhibition), routes it through the same routing tree as the embedded runtime and
delivers one notification per receiver through the same notifiers.

Exactly-once per receiver: a notification's id is derived from the alert and the receiver,
and sending is claimed in the notification log first (a conditional write with a lease), so
a redelivered message, or two invocations holding the same message, send it once. A receiver
that asks to retry leaves the message on the queue with a backoff; after the queue's
``maxReceiveCount`` it lands in the dispatcher's dead-letter queue, and a notification that
failed for good is recorded as dead in the log and in the alert's history.

Grouping (``group_by``/``group_wait``) is the embedded runtime's: here every alert is
notified on its own (see docs/deploy-aws.md). A resolved alert is announced too, and each
receiver that was notified of it is told, once (with ``notify_resolved``, the default).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from ringfence.alerts.config import AlertingConfig
from ringfence.alerts.dispatcher import label_set
from ringfence.alerts.matchers import all_match
from ringfence.alerts.notify import Notifier, Outcome, notifiers_of
from ringfence.errors import NotFound
from ringfence.runtimes.aws.alerts import AlertTable, NotificationBusy, to_alert

log = logging.getLogger("ringfence.aws.dispatch")


def notification_id(alert_id: str, receiver: str, change: str = "firing") -> str:
    """The id of the notification of an alert's ``change`` to a receiver: one each, ever."""
    suffix = "" if change == "firing" else f"|{change}"
    return "n_" + hashlib.sha256(f"{alert_id}|{receiver}{suffix}".encode()).hexdigest()[:24]


class AlertDispatcher:
    """One per container; :meth:`handle` takes one announced alert."""

    def __init__(
        self,
        alerts: AlertTable,
        config: AlertingConfig,
        *,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
    ) -> None:
        self.alerts = alerts
        self.config = config
        self.clock = clock
        self._client = client or httpx.Client(follow_redirects=False)
        self.notifiers: dict[str, Notifier] = notifiers_of(config, self._client)

    def handle(self, message: dict[str, Any]) -> str:
        """Take one announcement (a new alert, or one resolved); return "done", "muted" or
        "retry" (leave it on the queue)."""
        now = self.clock()
        try:
            item = self.alerts.get_item(str(message["alert_id"]))
        except NotFound:
            log.warning("announced alert %s is not in the table; dropped", message.get("alert_id"))
            return "done"
        alert = to_alert(item, [])
        as_dict = {k: v for k, v in msgspec.to_builtins(alert).items() if k not in ("history", "comments", "evidence")}
        labels = label_set(as_dict)
        if message.get("change") == "resolved":
            return self._resolved(as_dict, labels, now) if alert.status == "resolved" else "done"
        if alert.status == "resolved":
            return "done"
        reason = self._mute_reason(labels, now)
        if reason is not None:
            if alert.status == "open":
                self.alerts.set_status(alert.id, "open", "suppressed", "suppress", reason, now)
            return "muted"
        pending = False
        for route in self.config.route.match(labels):
            notifier = self.notifiers.get(route.receiver)
            if notifier is None:
                continue  # the dashboard receiver: the API is enough
            nid = notification_id(alert.id, route.receiver)
            if self._deliver(notifier, nid, route.id, route.receiver, as_dict, "firing", now) == "retry":
                pending = True
        return "retry" if pending else "done"

    def _resolved(self, alert: dict[str, Any], labels: dict[str, str], now: float) -> str:
        """Tell each receiver that was notified of the alert that it is resolved (once)."""
        if not self.config.notify_resolved:
            return "done"
        pending = False
        for route in self.config.route.match(labels):
            notifier = self.notifiers.get(route.receiver)
            fired = self.alerts.notification(notification_id(alert["id"], route.receiver))
            if notifier is None or fired is None or fired["status"] != "sent":
                continue  # never told of it (muted, the dashboard, or a dead letter): nothing to take back
            nid = notification_id(alert["id"], route.receiver, "resolved")
            if self._deliver(notifier, nid, route.id, route.receiver, alert, "resolved", now) == "retry":
                pending = True
        return "retry" if pending else "done"

    def _deliver(
        self,
        notifier: Notifier,
        nid: str,
        route_id: str,
        receiver: str,
        alert: dict[str, Any],
        status: str,
        now: float,
    ) -> str:
        try:
            attempts = self.alerts.claim_notification(nid, receiver, alert["id"], now)
        except NotificationBusy:
            return "retry"  # being sent by another invocation, or its sender died: look again later
        if attempts is None:
            return "done"  # sent already, or dead
        payload = {
            "version": "1",
            "notification_id": nid,
            "receiver": receiver,
            "status": status,
            "group_key": f"{route_id}|{alert['id']}",
            "group_labels": {"alert_id": alert["id"]},
            "alerts": [alert],
        }
        result = notifier.send(payload, nid, self.clock())
        attempts += 1
        if result.outcome is Outcome.SENT:
            self.alerts.record_notification(nid, "sent", attempts, result.detail, self.clock())
            self.alerts.add_history(alert["id"], "notify", f"notified via {receiver} ({nid})", self.clock())
            return "sent"
        if result.outcome is Outcome.RETRY and attempts < self.config.retry.max_attempts:
            self.alerts.record_notification(nid, "retry", attempts, result.detail, self.clock())
            return "retry"
        self.alerts.record_notification(nid, "dead", attempts, result.detail, self.clock())
        self.alerts.add_history(
            alert["id"], "notify", f"notification {nid} to {receiver} failed for good: {result.detail}", self.clock()
        )
        log.warning("notification %s to %s is a dead letter: %s", nid, receiver, result.detail)
        return "dead"

    def retry_delay(self, receive_count: int) -> int:
        """Seconds to hide a message before its next try: the retry policy's backoff."""
        policy = self.config.retry
        return int(min(policy.max_delay_s, policy.base_delay_s * 2 ** max(0, receive_count - 1)))

    def _mute_reason(self, labels: dict[str, str], now: float) -> str | None:
        for silence in self.alerts.silences():
            if silence.active(now) and all_match(silence.matchers, labels):
                return f"silenced by {silence.id}"
        for rule in self.config.inhibit_rules:
            if not all_match(rule.target, labels) or not labels.get("customer_id"):
                continue
            for other in self.alerts.active_of_customer(labels["customer_id"]):
                if other["id"] == labels["alert_id"]:
                    continue
                source = label_set(other)
                if all_match(rule.source, source) and all(source.get(k, "") == labels.get(k, "") for k in rule.equal):
                    return f"inhibited by {source['alert_id']}"
        return None

    def close(self) -> None:
        self._client.close()
