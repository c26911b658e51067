"""Alert changes announced on the alerts topic (the dispatcher's queue subscribes), and the
announcements still owed.

The processor announces each hit of an alert (its own ``by``/``announced`` marks on the alert
say whether that is still owed). An acknowledgement or resolution, by a person (the API) or by
the pipeline (auto-resolve), writes an owed marker in the transaction that changes the status:
item ``a|<alert id>`` / ``owe|<change>``, in ``by_active`` under :data:`OWED` at the time it
was owed. Whoever made the change hands it on (publishes it, or the dispatcher takes it itself)
and then settles the marker; the scheduled tick publishes those left owed longer than
:data:`OWED_GRACE_S` (a failed publish, a function that died), so no change is lost and a
change may be announced twice, which the dispatcher takes as once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from ringfence.alerts import lifecycle
from ringfence.alerts.model import Action, AlertChange, AlertStatus
from ringfence.errors import StoreError
from ringfence.runtimes.aws.alerts import STATUS_ATTEMPTS, AlertTable
from ringfence.runtimes.aws.items import n, s
from ringfence.runtimes.aws.resources import error_code

log = logging.getLogger("ringfence.aws.announce")

OWED = "~announce"  # their ``act`` in ``by_active`` (rule ids never start with ``~``)
OWED_GRACE_S = 60.0  # longer than an API request or a dispatch takes to hand its change on
OWED_PER_TICK = 100
_json = msgspec.json.Encoder()

Publish = Callable[[dict[str, Any]], None]


def announcement(change: AlertChange, alert_id: str, rule_id: str, severity: str, audience: str) -> dict[str, Any]:
    """The message announcing ``change`` of an alert: its id for the dispatcher, severity,
    audience and rule for subscription filter policies."""
    return {
        "version": "1",
        "change": change.value,
        "alert_id": alert_id,
        "rule_id": rule_id,
        "severity": severity,
        "audience": audience,
    }


class Announcer:
    """Publishes announcements on the alerts topic (severity, audience and rule as message
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


def _marker_key(alert_id: str, change: AlertChange) -> dict[str, Any]:
    return {"pk": s(f"a|{alert_id}"), "sk": s(f"owe|{change.value}")}


class OwedMarkers:
    """The owed markers in the alerts table."""

    def __init__(self, alerts: AlertTable) -> None:
        self.alerts = alerts

    def owe(self, alert_id: str, change: AlertChange, now: float) -> dict[str, Any]:
        """The transaction item noting that ``change`` of the alert is owed its announcement."""
        item = {**_marker_key(alert_id, change), "act": s(OWED), "updated_at": n(now)}
        return {"Put": {"TableName": self.alerts.table, "Item": item}}

    def settle(self, alert_id: str, change: AlertChange, owed_at: float) -> None:
        """The change owed at ``owed_at`` was handed on: drop its marker, unless owed again since."""
        try:
            self.alerts.db.delete_item(
                TableName=self.alerts.table,
                Key=_marker_key(alert_id, change),
                ConditionExpression="updated_at = :at",
                ExpressionAttributeValues={":at": n(owed_at)},
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                log.warning("could not settle %s of %s; it may be announced again: %s", change, alert_id, exc)

    def owed(self, before: float, limit: int) -> list[tuple[str, AlertChange, float]]:
        """Changes owed since before ``before``: (alert id, change, owed at)."""
        return [
            (
                i["pk"]["S"].removeprefix("a|"),
                AlertChange(i["sk"]["S"].removeprefix("owe|")),
                float(i["updated_at"]["N"]),
            )
            for i in self.alerts.get_many(self.alerts.due(OWED, before, limit))
        ]


class OwedAnnouncements:
    """Changes people make, announced durably: owed with the change, published after, and
    published by the tick if they are still owed."""

    def __init__(self, alerts: AlertTable, publish: Publish) -> None:
        self.alerts = alerts
        self.markers = OwedMarkers(alerts)
        self.publish = publish

    def transition(self, alert_id: str, action: Action, actor: str, reason: str, now: float) -> AlertChange | None:
        """Acknowledge or resolve for a person, with history, audit entry and owed marker in
        one transaction; the change made (None: the alert was there already). Conflict if not allowed."""
        for _ in range(STATUS_ATTEMPTS):
            status = self.alerts.get_item(alert_id)["status"]["S"]
            to = lifecycle.transition(action, status)
            if to is None:
                return None
            change = AlertChange.RESOLVED if to == AlertStatus.RESOLVED else AlertChange.ACKNOWLEDGED
            items = [
                *self.alerts.status_change(alert_id, status, to, actor, action, reason, now),
                self.markers.owe(alert_id, change, now),
            ]
            if self.alerts.audit.record(items, actor, f"alert.{action.value}", alert_id, {"reason": reason}, now):
                return change
        raise StoreError(f"alert {alert_id} kept changing: could not {action.value} it")

    def hand_on(self, message: dict[str, Any], owed_at: float) -> bool:
        """Publish an owed change's :func:`announcement` and settle its marker; False (logged)
        if the publish failed: the marker stays for the tick."""
        alert_id, change = message["alert_id"], AlertChange(message["change"])
        try:
            self.publish(message)
        except Exception as exc:
            log.warning("could not announce %s of %s; the tick will: %s", change, alert_id, error_code(exc) or exc)
            return False
        self.markers.settle(alert_id, change, owed_at)
        return True

    def publish_owed(self, now: float) -> int:
        """Publish what has been owed for longer than :data:`OWED_GRACE_S` (the tick); how many."""
        owed = self.markers.owed(now - OWED_GRACE_S, OWED_PER_TICK)
        alerts = {a["id"]: a for a in self.alerts.views(sorted({alert_id for alert_id, _, _ in owed}))}
        published = 0
        for alert_id, change, at in owed:
            a = alerts.get(alert_id)
            if a is None:  # gone: nothing to announce
                self.markers.settle(alert_id, change, at)
                continue
            message = announcement(change, alert_id, a["rule_id"], a["severity"], a["audience"])
            published += self.hand_on(message, at)
        return published
