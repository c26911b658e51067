"""The notification log in the alerts table (:class:`~ringfence.alerts.ports.NotificationLog`):
each notification a group flush owes a receiver, its attempts, and dead letters until someone
re-drives them. What an attempt's result means is :func:`~ringfence.alerts.delivery.after_attempt`'s
to say; this stores it.

A pending notification sits in ``by_active`` under ``~notify`` at its next attempt, so the
due ones are one query; a sender claims one by moving that time on by a lease, so another
sender skips it, and one that dies holding it lets it come due again.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import msgspec

from ringfence.alerts.delivery import NextStep
from ringfence.alerts.model import Notification, NotificationStatus
from ringfence.errors import NotFound
from ringfence.runtimes.aws.audit import AuditTrail
from ringfence.runtimes.aws.items import (
    CREATED_INDEX,
    DUE_NOTIFICATION,
    TableItems,
    n,
    s,
    sort_time,
)

SENT_TTL_S = 30 * 86400.0  # sent notifications are kept this long; dead letters until re-driven
_PARTITION = "notifications"  # their ``gp`` in ``by_created``
_CURSOR = {"pk": None, "sk": "n", "gp": _PARTITION, "gs": None}  # the key of a page's last one


def _key(nid: str) -> dict[str, Any]:
    return {"pk": s(f"n|{nid}"), "sk": s("n")}


def _notification(item: dict[str, Any]) -> Notification:
    return Notification(
        id=item["pk"]["S"].removeprefix("n|"),
        group_key=item["group_key"]["S"],
        receiver=item["receiver"]["S"],
        status=NotificationStatus(item["status"]["S"]),
        payload=msgspec.json.decode(zlib.decompress(item["payload"]["B"])),
        attempts=int(item["attempts"]["N"]),
        next_attempt_at=float(item["next_attempt_at"]["N"]),
        created_at=float(item["created_at"]["N"]),
        sent_at=float(item["sent_at"]["N"]) if "sent_at" in item else None,
        last_error=item["last_error"]["S"],
    )


class NotificationItems(TableItems):
    audit: AuditTrail

    def notification_put(
        self, nid: str, group_key: str, receiver: str, payload: dict[str, Any], now: float
    ) -> dict[str, Any]:
        """The transaction item adding a pending notification, due now (it fails if the id is taken)."""
        item = {
            **_key(nid),
            "group_key": s(group_key),
            "receiver": s(receiver),
            "status": s(NotificationStatus.PENDING),
            "payload": {"B": zlib.compress(msgspec.json.encode(payload))},  # a big group fits in an item
            "attempts": n(0),
            "next_attempt_at": n(now),
            "created_at": n(now),
            "last_error": s(""),
            "gp": s(_PARTITION),
            "gs": s(f"{sort_time(now)}|{nid}"),
            "act": s(DUE_NOTIFICATION),
            "updated_at": n(now),
        }
        return {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}

    def notification(self, notification_id: str) -> Notification | None:
        item = self.get(f"n|{notification_id}", "n")
        return _notification(item) if item else None

    def due_notifications(self, now: float, limit: int) -> list[Notification]:
        """Pending notifications the index shows due by ``now`` (read again: check they still are)."""
        return self.notifications_of([pk.removeprefix("n|") for pk, _ in self.due(DUE_NOTIFICATION, now, limit)])

    def notifications_of(self, ids: list[str]) -> list[Notification]:
        """The notifications of ``ids`` that exist, read consistently."""
        return [_notification(i) for i in self.get_many([(f"n|{nid}", "n") for nid in ids])]

    def next_attempt(self) -> float | None:
        """When the earliest pending notification is due."""
        return self.earliest(DUE_NOTIFICATION)

    def claim(self, nid: str, now: float, lease_s: float) -> bool:
        """Take a due notification for ``lease_s``; True if this caller has it."""
        return self.update_if(
            _key(nid),
            UpdateExpression="SET next_attempt_at = :lease, updated_at = :lease",
            ConditionExpression="#st = :pending AND next_attempt_at <= :now",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":lease": n(now + lease_s),
                ":pending": s(NotificationStatus.PENDING),
                ":now": n(now),
            },
        )

    def attempt_update(self, nid: str, step: NextStep, now: float) -> dict[str, Any]:
        """The transaction item keeping what an attempt at ``now`` decided: pending until
        ``step.next_attempt_at``, sent, or dead; but for a delivery, it fails on a
        notification that is no longer pending (superseded meanwhile)."""
        values: dict[str, Any] = {
            ":st": s(step.status),
            ":at": n(step.attempts),
            ":next": n(step.next_attempt_at),
            ":e": s(step.detail),
        }
        update = "SET #st = :st, attempts = :at, next_attempt_at = :next, last_error = :e"
        names = {"#st": "status"}
        if step.status is NotificationStatus.PENDING:
            update += ", updated_at = :next"
        elif step.status is NotificationStatus.SENT:
            update += ", sent_at = :now, #ttl = :ttl REMOVE act"
            values |= {":now": n(now), ":ttl": n(int(now + SENT_TTL_S))}
            names["#ttl"] = "ttl"
        else:
            update += " REMOVE act"
        item = {
            "TableName": self.table,
            "Key": _key(nid),
            "UpdateExpression": update,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if step.status is not NotificationStatus.SENT:
            item["ConditionExpression"] = "#st = :pending"
            values[":pending"] = s(NotificationStatus.PENDING)
        return {"Update": item}

    def supersede_update(self, nid: str, by: str, now: float) -> dict[str, Any]:
        """The transaction item superseding a notification that is still pending (it fails if
        it is not): never due again, and kept as long as a sent one."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": _key(nid),
                "UpdateExpression": "SET #st = :superseded, last_error = :e, updated_at = :now, #ttl = :ttl REMOVE act",
                "ConditionExpression": "#st = :pending",
                "ExpressionAttributeNames": {"#st": "status", "#ttl": "ttl"},
                "ExpressionAttributeValues": {
                    ":superseded": s(NotificationStatus.SUPERSEDED),
                    ":pending": s(NotificationStatus.PENDING),
                    ":e": s(f"superseded by {by}"),
                    ":now": n(now),
                    ":ttl": n(int(now + SENT_TTL_S)),
                },
            }
        }

    def notifications(
        self, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Notification], str | None]:
        """One page, newest first, and the cursor of the next page."""
        query: dict[str, Any] = {
            "IndexName": CREATED_INDEX,
            "KeyConditionExpression": "gp = :gp",
            "ExpressionAttributeValues": {":gp": s(_PARTITION)},
            "ScanIndexForward": False,
        }
        if status is not None:
            query["FilterExpression"] = "#st = :st"
            query["ExpressionAttributeNames"] = {"#st": "status"}
            query["ExpressionAttributeValues"][":st"] = s(status)
        items, next_cursor = self.listing(query, limit, cursor, _CURSOR)
        return [_notification(i) for i in items], next_cursor

    def count_by_status(self) -> dict[str, int]:
        """Notifications per status (pending, sent, dead, superseded)."""
        counts: dict[str, int] = {}
        for page in self.pages(
            IndexName=CREATED_INDEX,
            KeyConditionExpression="gp = :gp",
            ExpressionAttributeValues={":gp": s(_PARTITION)},
            ProjectionExpression="#st",
            ExpressionAttributeNames={"#st": "status"},
        ):
            for item in page:
                counts[item["status"]["S"]] = counts.get(item["status"]["S"], 0) + 1
        return counts

    def redrive(self, notification_id: str, actor: str, now: float) -> Notification:
        """A dead letter back to pending, attempts reset (audited); NotFound if it is not dead."""
        dead = self.notification(notification_id)
        if dead is None or dead.status is not NotificationStatus.DEAD:
            raise NotFound(f"no dead letter {notification_id!r}")
        update = {
            "Update": {
                "TableName": self.table,
                "Key": _key(notification_id),
                "UpdateExpression": "SET #st = :pending, attempts = :zero, next_attempt_at = :now, "
                "updated_at = :now, act = :due, last_error = :e",
                "ConditionExpression": "#st = :dead",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {
                    ":pending": s(NotificationStatus.PENDING),
                    ":dead": s(NotificationStatus.DEAD),
                    ":zero": n(0),
                    ":now": n(now),
                    ":due": s(DUE_NOTIFICATION),
                    ":e": s(""),
                },
            }
        }
        if not self.audit.record([update], actor, "notification.redrive", notification_id, {}, now):
            raise NotFound(f"no dead letter {notification_id!r}")  # re-driven meanwhile
        return replace(dead, status=NotificationStatus.PENDING, attempts=0, next_attempt_at=now, last_error="")
