"""Alerts in DynamoDB: idempotent creation and dedup, the lifecycle, silences, the
notification log and the audit trail of the aws runtime.

Item layout (table key ``pk`` + ``sk``):

| item | pk | sk |
|---|---|---|
| alert | ``a|<alert id>`` | ``alert`` (indexes ``by_created``, ``by_customer``, ``by_active``) |
| history entry, comment | ``a|<alert id>`` | ``h|<at>|<n>``, ``c|<at>|<n>`` |
| dedup pointer | ``d|<rule id>|<dedup key>`` | ``ptr``: latest occurrence, ``marks`` per source |
| notification | ``n|<notification id>`` | ``n`` |
| silence | ``silences`` | silence id |
| audit entry | ``audit|<day>`` | ``<at>|<token>`` |

``by_active`` holds unresolved alerts by rule and last update (``act`` is removed on
resolving): auto-resolve finds the quiet ones with one query.

A signal is applied at most once: the dedup pointer keeps, per source (a shard), the
ordinal of the last signal it applied, and every change is one transaction with it.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.alerts.matchers import parse_matchers, parse_stored_matchers
from ringfence.alerts.model import (
    ACTIVE_STATUSES,
    TRANSITIONS,
    Action,
    Alert,
    AlertQuery,
    Comment,
    HistoryEntry,
    alert_id,
)
from ringfence.alerts.silences import Silence
from ringfence.clock import iso
from ringfence.engine.rules import AlertSignal
from ringfence.errors import NotFound, RequestError, StoreError
from ringfence.runtimes.aws.resources import error_code
from ringfence.store.sql import MAX_EVIDENCE_EVENTS, SYSTEM_ACTOR

_json = msgspec.json.Encoder()
CREATED_INDEX = "by_created"
CUSTOMER_INDEX = "by_customer"
ACTIVE_INDEX = "by_active"  # sparse: ``act`` (the rule id) is set while an alert is not resolved
APPLY_ATTEMPTS = 8
NOTIFICATION_LEASE_S = 60.0  # a claimed notification not recorded by then may be sent again


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _sort_time(at: float) -> str:
    return f"{at:020.6f}"


class NotificationBusy(Exception):
    """Another invocation holds a live lease on the notification (or died holding it)."""


@dataclass(frozen=True)
class Applied:
    """What applying one signal did: the alert it went to, and whether that is new and
    not yet announced (its SNS message is still owed)."""

    alert_id: str
    created: bool
    owes_announcement: bool


class AlertTable:
    """The alerts table, for the processor, the dispatcher and the API handlers."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.db = dynamodb
        self.table = table

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        reply = self.db.get_item(TableName=self.table, Key={"pk": _s(pk), "sk": _s(sk)}, ConsistentRead=True)
        item: dict[str, Any] | None = reply.get("Item")
        return item

    # -- the processor's side ----------------------------------------------------------------------

    def apply(self, signal: AlertSignal, source: str, ordinal: str, now: float) -> Applied | None:
        """Create the alert of a live ``signal`` or count it into the active one, once.

        ``ordinal`` orders the signals of ``source`` (zero-padded, so strings compare); a signal
        at or before the pointer's mark for its source was applied already. Returns None then,
        unless the alert it created is still owed its announcement.
        """
        ptr_pk = f"d|{signal.rule_id}|{signal.dedup_key}"
        for _ in range(APPLY_ATTEMPTS):
            ptr = self._get(ptr_pk, "ptr")
            version = int(ptr["v"]["N"]) if ptr else 0
            latest = ptr["active"]["S"] if ptr and "active" in ptr else None
            occurrence = int(ptr["occ"]["N"]) if ptr else 0
            mark = ptr.get("marks", {}).get("M", {}).get(source, {}).get("S", "") if ptr else ""
            alert = self._get(f"a|{latest}", "alert") if latest else None
            if mark >= ordinal:
                owed = alert is not None and alert.get("by", {}).get("S") == ordinal and "announced" not in alert
                return Applied(latest, True, True) if owed and latest else None
            ptr_update = self._pointer_update(ptr_pk, version, source, ordinal)
            evidence_event = {
                "event_id": signal.event_id,
                "type": signal.event_type,
                "offset": signal.offset,
                "occurred_at": iso(signal.occurred_at),
                "ingested_at": iso(signal.ingested_at),
                "late": signal.late,
                "features": signal.features,
            }
            related = [
                {**e, "occurred_at": iso(e["occurred_at"]), "ingested_at": iso(e["ingested_at"])}
                for e in signal.related_events
            ]
            if alert is not None and alert["status"]["S"] in ACTIVE_STATUSES:
                assert latest is not None
                evidence = msgspec.json.decode(alert["evidence"]["S"])
                evidence["events"] = (evidence["events"] + related + [evidence_event])[-MAX_EVIDENCE_EVENTS:]
                evidence["features"] = signal.features
                items = [
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": {"pk": _s(f"a|{latest}"), "sk": _s("alert")},
                            "UpdateExpression": "SET #c = #c + :one, first_seen = :first, last_seen = :last, "
                            "evidence = :ev, updated_at = :now, title = :title, summary = :summary",
                            "ConditionExpression": "#st IN (:a0, :a1, :a2)",
                            "ExpressionAttributeNames": {"#c": "count", "#st": "status"},
                            "ExpressionAttributeValues": {
                                ":one": _n(1),
                                ":first": _n(min(float(alert["first_seen"]["N"]), signal.occurred_at)),
                                ":last": _n(max(float(alert["last_seen"]["N"]), signal.occurred_at)),
                                ":ev": _s(_json.encode(evidence).decode()),
                                ":now": _n(now),
                                ":title": _s(signal.title),
                                ":summary": _s(signal.summary),
                                **{f":a{i}": _s(s) for i, s in enumerate(ACTIVE_STATUSES)},
                            },
                        }
                    },
                    ptr_update,
                ]
                created, aid = False, latest
            else:
                occurrence += 1
                aid = alert_id(signal.rule_id, signal.dedup_key, occurrence)
                ptr_update["Update"]["UpdateExpression"] += ", active = :aid, occ = :occ"
                ptr_update["Update"]["ExpressionAttributeValues"].update({":aid": _s(aid), ":occ": _n(occurrence)})
                items = [
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": self._new_alert_item(
                                aid, signal, occurrence, related, evidence_event, ordinal, now
                            ),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    self._history_put(
                        aid,
                        now,
                        SYSTEM_ACTOR,
                        "created",
                        f"rule {signal.rule_id} matched event {signal.event_id}",
                        None,
                        "open",
                    ),
                    ptr_update,
                ]
                created = True
            try:
                self.db.transact_write_items(TransactItems=items)
            except Exception as exc:
                if error_code(exc) == "TransactionCanceledException":
                    continue  # a racing writer or a status change: read again
                raise
            return Applied(aid, created, created)
        raise StoreError(f"could not apply a signal of {signal.rule_id} after {APPLY_ATTEMPTS} attempts")

    def _pointer_update(self, pk: str, version: int, source: str, ordinal: str) -> dict[str, Any]:
        condition = "v = :v" if version else "attribute_not_exists(pk)"
        values: dict[str, Any] = {":next": _n(version + 1), ":ord": _s(ordinal)}
        if version:
            values[":v"] = _n(version)
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"pk": _s(pk), "sk": _s("ptr")},
                # a map must exist before a path in it can be set: the first write makes it whole
                "UpdateExpression": "SET v = :next, " + ("marks.#src = :ord" if version else "marks = :marks"),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#src": source} if version else {},
                "ExpressionAttributeValues": values if version else {**values, ":marks": {"M": {source: _s(ordinal)}}},
            }
        }

    def _new_alert_item(
        self,
        aid: str,
        s: AlertSignal,
        occurrence: int,
        related: list[dict[str, Any]],
        evidence_event: dict[str, Any],
        ordinal: str,
        now: float,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": _s(f"a|{aid}"),
            "sk": _s("alert"),
            "id": _s(aid),
            "rule_id": _s(s.rule_id),
            "rule_version": _s(s.rule_version),
            "severity": _s(s.severity),
            "audience": _s(s.audience),
            "status": _s("open"),
            "dedup_key": _s(s.dedup_key),
            "occurrence": _n(occurrence),
            "labels": _s(_json.encode(s.labels).decode()),
            "title": _s(s.title),
            "summary": _s(s.summary),
            "evidence": _s(_json.encode({"events": [*related, evidence_event], "features": s.features}).decode()),
            "first_seen": _n(s.occurred_at),
            "last_seen": _n(s.occurred_at),
            "created_at": _n(now),
            "updated_at": _n(now),
            "count": _n(1),
            "by": _s(ordinal),
            "act": _s(s.rule_id),
            "gp": _s("alerts"),
            "gs": _s(f"{_sort_time(now)}|{aid}"),
        }
        if s.customer_id is not None:
            item["customer_id"] = _s(s.customer_id)
        return item

    def _history_put(
        self, aid: str, now: float, actor: str, action: str, reason: str, from_status: str | None, to: str | None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": _s(f"a|{aid}"),
            "sk": _s(f"h|{_sort_time(now)}|{secrets.token_hex(4)}"),
            "at": _n(now),
            "actor": _s(actor),
            "action": _s(action),
            "reason": _s(reason),
        }
        if from_status:
            item["from"] = _s(from_status)
        if to:
            item["to"] = _s(to)
        return {"Put": {"TableName": self.table, "Item": item}}

    def mark_announced(self, aid: str) -> None:
        """The alert's SNS message went out: a re-applied outbox will not send it again."""
        self.db.update_item(
            TableName=self.table,
            Key={"pk": _s(f"a|{aid}"), "sk": _s("alert")},
            UpdateExpression="SET announced = :t",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )

    # -- reading -----------------------------------------------------------------------------------

    def get_item(self, aid: str) -> dict[str, Any]:
        item = self._get(f"a|{aid}", "alert")
        if item is None:
            raise NotFound(f"no alert {aid!r}")
        return item

    def get_alert(self, aid: str) -> Alert:
        """An alert with its history and comments (one query over its partition)."""
        reply = self.db.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"a|{aid}")},
            ConsistentRead=True,
        )
        items = reply.get("Items", [])
        main = next((i for i in items if i["sk"]["S"] == "alert"), None)
        if main is None:
            raise NotFound(f"no alert {aid!r}")
        history = [_history(i) for i in items if i["sk"]["S"].startswith("h|")]
        alert = to_alert(main, history)
        alert.comments = [
            Comment(at=iso(float(i["at"]["N"])), author=i["actor"]["S"], text=i["text"]["S"])
            for i in items
            if i["sk"]["S"].startswith("c|")
        ]
        return alert

    def list_alerts(self, query: AlertQuery, cursor: str | None = None) -> tuple[list[Alert], str | None]:
        """One page of alerts, newest first, and the cursor of the next page (or None)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {":gp": _s("alerts")}
        filters: list[str] = []
        for attr, wanted in (("status", query.status), ("severity", query.severity), ("audience", query.audience)):
            if wanted:
                names[f"#{attr}"] = attr
                marks = []
                for i, v in enumerate(wanted):
                    values[f":{attr}{i}"] = _s(v)
                    marks.append(f":{attr}{i}")
                filters.append(f"#{attr} IN ({', '.join(marks)})")
        for attr, one in (("rule_id", query.rule_id), ("customer_id", query.customer_id)):
            if one is not None:
                values[f":{attr}"] = _s(one)
                filters.append(f"{attr} = :{attr}")
        if query.since is not None:
            values[":since"] = _n(query.since)
            filters.append("last_seen >= :since")
        if query.until is not None:
            values[":until"] = _n(query.until)
            filters.append("first_seen < :until")
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": CREATED_INDEX,
            "KeyConditionExpression": "gp = :gp",
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        if query.customer_id is not None:  # one customer's alerts: their own index, newest first
            del values[":gp"]
            kwargs["IndexName"] = CUSTOMER_INDEX
            kwargs["KeyConditionExpression"] = "customer_id = :customer_id"
            filters.remove("customer_id = :customer_id")
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        if cursor:
            kwargs["ExclusiveStartKey"] = _decode_cursor(cursor)
        found: list[dict[str, Any]] = []
        while len(found) <= query.limit:
            kwargs["Limit"] = max(query.limit * 2, 20)
            reply = self.db.query(**kwargs)
            found.extend(reply.get("Items", []))
            if "LastEvaluatedKey" not in reply:
                break
            kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]
        page = found[: query.limit]
        more = len(found) > query.limit
        next_cursor = None
        if more and page:
            last = page[-1]
            index_key = "customer_id" if query.customer_id is not None else "gp"
            next_cursor = _encode_cursor({k: last[k] for k in ("pk", "sk", index_key, "gs")})
        return [to_alert(i, []) for i in page], next_cursor

    def active_of_customer(self, customer_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """A customer's open and acknowledged alerts, newest first, as label sources (inhibition)."""
        reply = self.db.query(
            TableName=self.table,
            IndexName=CUSTOMER_INDEX,
            KeyConditionExpression="customer_id = :c",
            FilterExpression="#st IN (:open, :acked)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={":c": _s(customer_id), ":open": _s("open"), ":acked": _s("acknowledged")},
            ScanIndexForward=False,
            Limit=limit,
        )
        return [
            {
                "id": i["id"]["S"],
                "rule_id": i["rule_id"]["S"],
                "severity": i["severity"]["S"],
                "audience": i["audience"]["S"],
                "customer_id": customer_id,
                "labels": msgspec.json.decode(i["labels"]["S"]),
            }
            for i in reply.get("Items", [])
        ]

    # -- the lifecycle ---------------------------------------------------------------------------------

    def transition(self, aid: str, action: Action, actor: str, reason: str, now: float) -> Alert:
        """Acknowledge or resolve, with history and an audit entry; idempotent."""
        allowed_from, to_status = TRANSITIONS[action]
        status = self.get_item(aid)["status"]["S"]
        if status == to_status:
            return self.get_alert(aid)
        if status not in allowed_from:
            raise RequestError(409, "conflict", f"cannot {action.value} an alert that is {status}")
        self._change_status(aid, status, to_status, actor, action.value, reason, now)
        self.audit(actor, f"alert.{action.value}", aid, {"reason": reason}, now)
        return self.get_alert(aid)

    def set_status(self, aid: str, from_status: str, to_status: str, action: str, reason: str, now: float) -> bool:
        """The pipeline's own status change (suppression); False if the status moved meanwhile."""
        return self._change_status(aid, from_status, to_status, SYSTEM_ACTOR, action, reason, now)

    def _change_status(
        self, aid: str, from_status: str, to_status: str, actor: str, action: str, reason: str, now: float
    ) -> bool:
        items = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {"pk": _s(f"a|{aid}"), "sk": _s("alert")},
                    "UpdateExpression": "SET #st = :to, updated_at = :now"
                    + (" REMOVE act" if to_status == "resolved" else ""),
                    "ConditionExpression": "#st = :from",
                    "ExpressionAttributeNames": {"#st": "status"},
                    "ExpressionAttributeValues": {":to": _s(to_status), ":from": _s(from_status), ":now": _n(now)},
                }
            },
            self._history_put(aid, now, actor, action, reason, from_status, to_status),
        ]
        try:
            self.db.transact_write_items(TransactItems=items)
        except Exception as exc:
            if error_code(exc) == "TransactionCanceledException":
                return False
            raise
        return True

    def quiet_active(self, rule_id: str, updated_before: float, limit: int = 100) -> list[str]:
        """Ids of the rule's unresolved alerts not updated since ``updated_before`` (auto-resolve)."""
        reply = self.db.query(
            TableName=self.table,
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="act = :r AND updated_at < :t",
            ExpressionAttributeValues={":r": _s(rule_id), ":t": _n(updated_before)},
            Limit=limit,
        )
        return [i["pk"]["S"].removeprefix("a|") for i in reply.get("Items", [])]

    def auto_resolve(self, aid: str, reason: str, now: float) -> bool:
        """Resolve an alert on the pipeline's behalf; False if it was resolved meanwhile."""
        status = self.get_item(aid)["status"]["S"]
        if status == "resolved":
            return False
        return self._change_status(aid, status, "resolved", SYSTEM_ACTOR, "auto-resolve", reason, now)

    def add_history(self, aid: str, action: str, reason: str, now: float) -> None:
        put = self._history_put(aid, now, SYSTEM_ACTOR, action, reason, None, None)["Put"]
        self.db.put_item(**put)

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any], now: float) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        self.db.put_item(
            TableName=self.table,
            Item={
                "pk": _s(f"audit|{day}"),
                "sk": _s(f"{_sort_time(now)}|{secrets.token_hex(6)}"),
                "actor": _s(actor),
                "action": _s(action),
                "target": _s(target),
                "detail": _s(_json.encode(detail).decode()),
            },
        )

    # -- silences --------------------------------------------------------------------------------------

    def create_silence(
        self, matchers: list[str], starts_at: float, ends_at: float, actor: str, comment: str, now: float
    ) -> Silence:
        if ends_at <= starts_at:
            raise RequestError(400, "invalid_silence", "a silence must end after it starts")
        silence = Silence(
            "si_" + secrets.token_hex(8), parse_matchers(matchers), starts_at, ends_at, actor, comment, now
        )
        self.db.put_item(
            TableName=self.table,
            Item={
                "pk": _s("silences"),
                "sk": _s(silence.id),
                "matchers": _s(_json.encode(matchers).decode()),
                "starts_at": _n(starts_at),
                "ends_at": _n(ends_at),
                "created_by": _s(actor),
                "comment": _s(comment),
                "created_at": _n(now),
                "ttl": _n(int(ends_at + 30 * 86400)),
            },
        )
        self.audit(actor, "silence.create", silence.id, {"matchers": matchers, "comment": comment}, now)
        return silence

    def silences(self) -> list[Silence]:
        reply = self.db.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": _s("silences")},
            ConsistentRead=True,
        )
        return [
            Silence(
                i["sk"]["S"],
                parse_stored_matchers(msgspec.json.decode(i["matchers"]["S"])),
                float(i["starts_at"]["N"]),
                float(i["ends_at"]["N"]),
                i["created_by"]["S"],
                i["comment"]["S"],
                float(i["created_at"]["N"]),
            )
            for i in reply.get("Items", [])
        ]

    # -- the notification log --------------------------------------------------------------------------

    def claim_notification(self, nid: str, receiver: str, alert: str, now: float) -> int | None:
        """Take the right to send notification ``nid``: returns the attempts made so far, or None
        if it was sent or is dead. Raises NotificationBusy while another invocation's lease on
        it is live: the caller tries again later (the lease of one that crashed runs out)."""
        try:
            reply = self.db.update_item(
                TableName=self.table,
                Key={"pk": _s(f"n|{nid}"), "sk": _s("n")},
                UpdateExpression="SET #st = :sending, lease = :lease, receiver = :r, alert_id = :a, "
                "attempts = if_not_exists(attempts, :zero)",
                ConditionExpression="attribute_not_exists(pk) OR #st = :retry OR (#st = :sending AND lease < :now)",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    ":sending": _s("sending"),
                    ":retry": _s("retry"),
                    ":lease": _n(now + NOTIFICATION_LEASE_S),
                    ":now": _n(now),
                    ":r": _s(receiver),
                    ":a": _s(alert),
                    ":zero": _n(0),
                },
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            current = self._get(f"n|{nid}", "n")
            if current is not None and current["status"]["S"] == "sending":
                raise NotificationBusy(nid) from None
            return None
        return int(reply["Attributes"]["attempts"]["N"])

    def record_notification(self, nid: str, status: str, attempts: int, detail: str, now: float) -> None:
        self.db.update_item(
            TableName=self.table,
            Key={"pk": _s(f"n|{nid}"), "sk": _s("n")},
            UpdateExpression="SET #st = :st, attempts = :at, detail = :d, updated_at = :now REMOVE lease",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":st": _s(status),
                ":at": _n(attempts),
                ":d": _s(detail[:500]),
                ":now": _n(now),
            },
        )

    def notification(self, nid: str) -> dict[str, Any] | None:
        item = self._get(f"n|{nid}", "n")
        if item is None:
            return None
        return {
            "id": nid,
            "status": item["status"]["S"],
            "attempts": int(item["attempts"]["N"]),
            "receiver": item["receiver"]["S"],
            "alert_id": item["alert_id"]["S"],
        }


def _history(item: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        at=iso(float(item["at"]["N"])),
        actor=item["actor"]["S"],
        action=item["action"]["S"],
        reason=item["reason"]["S"],
        from_status=item["from"]["S"] if "from" in item else None,
        to_status=item["to"]["S"] if "to" in item else None,
    )


def to_alert(item: dict[str, Any], history: list[HistoryEntry]) -> Alert:
    """An alert item as the API's Alert."""
    return Alert(
        id=item["id"]["S"],
        rule_id=item["rule_id"]["S"],
        rule_version=item["rule_version"]["S"],
        severity=item["severity"]["S"],
        audience=item["audience"]["S"],
        status=item["status"]["S"],
        customer_id=item["customer_id"]["S"] if "customer_id" in item else None,
        dedup_key=item["dedup_key"]["S"],
        labels=msgspec.json.decode(item["labels"]["S"]),
        title=item["title"]["S"],
        summary=item["summary"]["S"],
        evidence=msgspec.json.decode(item["evidence"]["S"]),
        first_seen=iso(float(item["first_seen"]["N"])),
        last_seen=iso(float(item["last_seen"]["N"])),
        created_at=iso(float(item["created_at"]["N"])),
        updated_at=iso(float(item["updated_at"]["N"])),
        count=int(item["count"]["N"]),
        assignee=item["assignee"]["S"] if "assignee" in item else None,
        history=history,
    )


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(_json.encode(key)).decode()


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        key = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, msgspec.DecodeError):
        raise RequestError(400, "invalid_cursor", "cursor is not one this API gave out") from None
    if not isinstance(key, dict) or set(key) not in ({"pk", "sk", "gp", "gs"}, {"pk", "sk", "customer_id", "gs"}):
        raise RequestError(400, "invalid_cursor", "cursor is not one this API gave out")
    return key
