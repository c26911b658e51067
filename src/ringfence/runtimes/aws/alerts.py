"""The alerts table of the aws runtime: alerts with their history (the processor creates and
deduplicates them, people acknowledge and resolve them), and, from the modules it combines,
silences, groups, the notification log and the audit trail. It implements the alert
pipeline's storage Protocols (:mod:`ringfence.alerts.ports`) and decides nothing itself:
evidence, transitions and statuses are :mod:`ringfence.alerts.lifecycle`'s. The item layout
is in :mod:`.items`.

A signal is applied at most once: the dedup pointer keeps, per source (a shard), the
ordinal of the last signal it applied, and every change is one transaction with it.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.alerts import lifecycle
from ringfence.alerts.config import InhibitRule
from ringfence.alerts.lifecycle import ACTIVE, FIRING, SYSTEM_ACTOR
from ringfence.alerts.model import (
    Action,
    Alert,
    AlertQuery,
    AlertStatus,
    AlertSummary,
    Comment,
    Decision,
    HistoryEntry,
    alert_id,
)
from ringfence.alerts.muting import label_set
from ringfence.clock import iso
from ringfence.engine.rules import AlertSignal
from ringfence.errors import NotFound, StoreError
from ringfence.runtimes.aws.audit import AuditTrail
from ringfence.runtimes.aws.groups import GroupItems
from ringfence.runtimes.aws.items import (
    ACTIVE_INDEX,
    CREATED_INDEX,
    CUSTOMER_INDEX,
    json_s,
    n,
    s,
    sort_time,
)
from ringfence.runtimes.aws.notification_log import NotificationItems
from ringfence.runtimes.aws.silences import SilenceItems

APPLY_ATTEMPTS = 8
STATUS_ATTEMPTS = 8
INHIBITION_SOURCES = 500  # the newest firing alerts an inhibition rule looks at, as embedded
INHIBITION_PAGES = 4  # pages of INHIBITION_SOURCES of the newest alerts read at most to find them
_entries = itertools.count()  # orders a container's entries of one instant as written (the rest: random)
_ATTRIBUTE_LABELS = ("rule_id", "severity", "audience")  # labels alerts keep as attributes (and customer_id)
_LABEL_SET_ATTRIBUTES = ("id", "rule_id", "severity", "audience", "customer_id", "labels")  # what label_set reads


@dataclass(frozen=True)
class Applied:
    """What applying one signal did: the alert it went to, whether that is new, and whether
    its SNS message is still owed. Every live hit is announced, new or not, as the SQL stores
    put every hit in their outbox: the pipeline mutes or un-mutes an alert at its hits."""

    alert_id: str
    created: bool
    owes_announcement: bool


def _key(aid: str) -> dict[str, Any]:
    return {"pk": s(f"a|{aid}"), "sk": s("alert")}


class AlertTable(SilenceItems, NotificationItems, GroupItems):
    """The alerts table, for the processor, the dispatcher and the API.

    ``audit_key`` keys the audit chain (``RINGFENCE_SECRET_AUDIT_KEY``); without it, changes
    people make (which are audited) are refused.
    """

    def __init__(self, dynamodb: Any, table: str, audit_key: bytes | None = None) -> None:
        super().__init__(dynamodb, table)
        self.audit = AuditTrail(dynamodb, table, audit_key)

    # -- the processor's side ----------------------------------------------------------------------

    def apply(self, signal: AlertSignal, source: str, ordinal: str, now: float) -> Applied | None:
        """Create the alert of a live ``signal`` or count it into the active one, once.

        ``ordinal`` orders the signals of ``source`` (zero-padded, so strings compare); a signal
        at or before the pointer's mark for its source was applied already. Returns None then,
        unless the alert it created is still owed its announcement.
        """
        ptr_pk = f"d|{signal.rule_id}|{signal.dedup_key}"
        for _ in range(APPLY_ATTEMPTS):
            ptr = self.get(ptr_pk, "ptr")
            version = int(ptr["v"]["N"]) if ptr else 0
            latest = ptr["active"]["S"] if ptr and "active" in ptr else None
            occurrence = int(ptr["occ"]["N"]) if ptr else 0
            mark = ptr.get("marks", {}).get("M", {}).get(source, {}).get("S", "") if ptr else ""
            alert = self.get(f"a|{latest}", "alert") if latest else None
            if mark >= ordinal:
                owed = alert is not None and alert.get("by", {}).get("S") == ordinal and "announced" not in alert
                first = alert is not None and int(alert["count"]["N"]) == 1
                return Applied(latest, first, True) if owed and latest else None
            ptr_update = self._pointer_update(ptr_pk, version, source, ordinal)
            if latest is not None and alert is not None and alert["status"]["S"] in ACTIVE:
                items = [self._another_hit(latest, alert, signal, ordinal, now), ptr_update]
                created, aid = False, latest
            else:
                occurrence += 1
                aid = alert_id(signal.rule_id, signal.dedup_key, occurrence)
                ptr_update["Update"]["UpdateExpression"] += ", active = :aid, occ = :occ"
                ptr_update["Update"]["ExpressionAttributeValues"].update({":aid": s(aid), ":occ": n(occurrence)})
                new = self._new_alert_item(aid, signal, occurrence, ordinal, now)
                items = [
                    {"Put": {"TableName": self.table, "Item": new, "ConditionExpression": "attribute_not_exists(pk)"}},
                    self._history_put(
                        aid,
                        now,
                        SYSTEM_ACTOR,
                        Decision.CREATED,
                        f"rule {signal.rule_id} matched event {signal.event_id}",
                        None,
                        AlertStatus.OPEN,
                    ),
                    ptr_update,
                ]
                created = True
            if self.transact(items):
                return Applied(aid, created, True)
            # a racing writer or a status change: read again
        raise StoreError(f"could not apply a signal of {signal.rule_id} after {APPLY_ATTEMPTS} attempts")

    def _another_hit(
        self, aid: str, alert: dict[str, Any], signal: AlertSignal, ordinal: str, now: float
    ) -> dict[str, Any]:
        hit = lifecycle.another_hit(float(alert["first_seen"]["N"]), float(alert["last_seen"]["N"]), signal)
        evidence = lifecycle.merge_evidence(msgspec.json.decode(alert["evidence"]["S"]), signal)
        return {
            "Update": {
                "TableName": self.table,
                "Key": _key(aid),
                # ``by``: the hit now owed its announcement (a replayed outbox sends it if still owed)
                "UpdateExpression": "SET #c = #c + :one, first_seen = :first, last_seen = :last, "
                "evidence = :ev, updated_at = :now, title = :title, summary = :summary, #by = :ord "
                "REMOVE announced",
                "ConditionExpression": f"#st IN ({', '.join(f':a{i}' for i in range(len(ACTIVE)))})",
                "ExpressionAttributeNames": {"#c": "count", "#st": "status", "#by": "by"},
                "ExpressionAttributeValues": {
                    ":one": n(1),
                    ":ord": s(ordinal),
                    ":first": n(hit.first_seen),
                    ":last": n(hit.last_seen),
                    ":ev": json_s(evidence),
                    ":now": n(now),
                    ":title": s(hit.title),
                    ":summary": s(hit.summary),
                    **{f":a{i}": s(status) for i, status in enumerate(ACTIVE)},
                },
            }
        }

    def _pointer_update(self, pk: str, version: int, source: str, ordinal: str) -> dict[str, Any]:
        update: dict[str, Any] = {"TableName": self.table, "Key": {"pk": s(pk), "sk": s("ptr")}}
        values: dict[str, Any] = {":next": n(version + 1), ":ord": s(ordinal)}
        if version:
            update |= {
                "UpdateExpression": "SET v = :next, marks.#src = :ord",
                "ConditionExpression": "v = :v",
                "ExpressionAttributeNames": {"#src": source},
                "ExpressionAttributeValues": {**values, ":v": n(version)},
            }
        else:  # a map must exist before a path in it can be set: the first write makes it whole
            update |= {
                "UpdateExpression": "SET v = :next, marks = :marks",
                "ConditionExpression": "attribute_not_exists(pk)",
                "ExpressionAttributeValues": {**values, ":marks": {"M": {source: s(ordinal)}}},
            }
        return {"Update": update}

    def _new_alert_item(
        self, aid: str, signal: AlertSignal, occurrence: int, ordinal: str, now: float
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            **_key(aid),
            "id": s(aid),
            "rule_id": s(signal.rule_id),
            "rule_version": s(signal.rule_version),
            "severity": s(signal.severity),
            "audience": s(signal.audience),
            "status": s(AlertStatus.OPEN),
            "dedup_key": s(signal.dedup_key),
            "occurrence": n(occurrence),
            "labels": json_s(signal.labels),
            "title": s(signal.title),
            "summary": s(signal.summary),
            "evidence": json_s(lifecycle.new_evidence(signal)),
            "first_seen": n(signal.occurred_at),
            "last_seen": n(signal.occurred_at),
            "created_at": n(now),
            "updated_at": n(now),
            "count": n(1),
            "by": s(ordinal),
            "act": s(signal.rule_id),  # in ``by_active`` until resolved
            "gp": s("alerts"),
            "gs": s(f"{sort_time(now)}|{aid}"),
        }
        if signal.customer_id is not None:
            item["customer_id"] = s(signal.customer_id)
        return item

    def _history_put(
        self, aid: str, now: float, actor: str, action: str, reason: str, from_status: str | None, to: str | None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": s(f"a|{aid}"),
            "sk": s(f"h|{sort_time(now)}|{next(_entries):012x}{secrets.token_hex(2)}"),
            "at": n(now),
            "actor": s(actor),
            "action": s(action),
            "reason": s(reason),
        }
        if from_status:
            item["from"] = s(from_status)
        if to:
            item["to"] = s(to)
        return {"Put": {"TableName": self.table, "Item": item}}

    def mark_announced(self, aid: str, ordinal: str) -> None:
        """The SNS message of the alert's hit ``ordinal`` went out: a re-applied outbox will not
        send it again. A later hit's message stays owed (the condition)."""
        self.update_if(
            _key(aid),
            UpdateExpression="SET announced = :t",
            ConditionExpression="#by = :ord",
            ExpressionAttributeNames={"#by": "by"},
            ExpressionAttributeValues={":t": {"BOOL": True}, ":ord": s(ordinal)},
        )

    def quiet_active(self, rule_id: str, updated_before: float, limit: int = 100) -> list[str]:
        """Ids of the rule's unresolved alerts not updated since ``updated_before`` (auto-resolve)."""
        reply = self.db.query(
            TableName=self.table,
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="act = :r AND updated_at < :t",
            ExpressionAttributeValues={":r": s(rule_id), ":t": n(updated_before)},
            Limit=limit,
        )
        return [i["pk"]["S"].removeprefix("a|") for i in reply.get("Items", [])]

    # -- reading -----------------------------------------------------------------------------------

    def get_item(self, aid: str) -> dict[str, Any]:
        item = self.get(f"a|{aid}", "alert")
        if item is None:
            raise NotFound(f"no alert {aid!r}")
        return item

    def get_alert(self, alert_id: str) -> Alert:
        """An alert with its history and comments (one query over its partition)."""
        items = [
            i
            for page in self.pages(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": s(f"a|{alert_id}")},
                ConsistentRead=True,
            )
            for i in page
        ]
        main = next((i for i in items if i["sk"]["S"] == "alert"), None)
        if main is None:
            raise NotFound(f"no alert {alert_id!r}")
        alert = _alert(main, [_history(i) for i in items if i["sk"]["S"].startswith("h|")])
        alert.comments = [
            Comment(at=iso(float(i["at"]["N"])), author=i["actor"]["S"], text=i["text"]["S"])
            for i in items
            if i["sk"]["S"].startswith("c|")
        ]
        return alert

    def list_alerts(self, query: AlertQuery) -> tuple[list[Alert], str | None]:
        """One page of alerts, newest first, and the cursor of the next page (or None)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        filters: list[str] = []
        for attr, wanted in (("status", query.status), ("severity", query.severity), ("audience", query.audience)):
            if wanted:
                names[f"#{attr}"] = attr
                values |= {f":{attr}{i}": s(v) for i, v in enumerate(wanted)}
                filters.append(f"#{attr} IN ({', '.join(f':{attr}{i}' for i in range(len(wanted)))})")
        if query.rule_id is not None:
            values[":rule_id"] = s(query.rule_id)
            filters.append("rule_id = :rule_id")
        if query.since is not None:
            values[":since"] = n(query.since)
            filters.append("last_seen >= :since")
        if query.until is not None:
            values[":until"] = n(query.until)
            filters.append("first_seen < :until")
        if query.customer_id is not None:  # one customer's alerts: their own index, newest first
            index, index_key, partition = CUSTOMER_INDEX, "customer_id", query.customer_id
        else:
            index, index_key, partition = CREATED_INDEX, "gp", "alerts"
        values[":key"] = s(partition)
        kwargs: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": f"{index_key} = :key",
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        cursor_key = {"pk": None, "sk": "alert", index_key: partition, "gs": None}
        items, next_cursor = self.listing(kwargs, query.limit, query.cursor, cursor_key)
        return [_alert(i, []) for i in items], next_cursor

    def views(self, alert_ids: list[str]) -> list[AlertSummary]:
        """The alerts of ``alert_ids`` that exist, in that order, as the pipeline sees them
        (matchers' labels, notification payloads)."""
        found = {i["id"]["S"]: i for i in self.get_many([(f"a|{aid}", "alert") for aid in alert_ids])}
        return [_summary(found[aid]) for aid in alert_ids if aid in found]

    def inhibition_sources(self, rule: InhibitRule, labels: Mapping[str, str]) -> list[dict[str, str]]:
        """The newest firing alerts but ``labels``' own (up to :data:`INHIBITION_SOURCES`) that
        agree with it on the ``equal`` labels alerts keep as attributes, as label sets: those of
        its customer through their index, when ``customer_id`` is among them and it has one
        (:func:`~ringfence.alerts.muting.inhibited_by` checks the rest). Asked per inhibit rule at
        every hit, it reads only what a label set needs, of at most :data:`INHIBITION_PAGES` pages
        of :data:`INHIBITION_SOURCES` of the newest alerts."""
        names = {"#st": "status", **{f"#{a}": a for a in _LABEL_SET_ATTRIBUTES}}
        values: dict[str, Any] = {":self": s(labels.get("alert_id", ""))}
        values |= {f":f{i}": s(status) for i, status in enumerate(FIRING)}
        filters = [f"#st IN ({', '.join(f':f{i}' for i in range(len(FIRING)))})", "#id <> :self"]
        customer = labels.get("customer_id", "")
        if "customer_id" in rule.equal and customer:
            index, condition, values[":key"] = CUSTOMER_INDEX, "customer_id = :key", s(customer)
        else:
            index, condition, values[":key"] = CREATED_INDEX, "gp = :key", s("alerts")
            if "customer_id" in rule.equal:
                filters.append("attribute_not_exists(customer_id)")
        for name in _ATTRIBUTE_LABELS:
            if name in rule.equal:
                values[f":{name}"] = s(labels.get(name, ""))
                filters.append(f"#{name} = :{name}")
        found: list[dict[str, str]] = []
        pages = self.pages(
            IndexName=index,
            KeyConditionExpression=condition,
            FilterExpression=" AND ".join(filters),
            ProjectionExpression=", ".join(f"#{a}" for a in _LABEL_SET_ATTRIBUTES),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
            Limit=INHIBITION_SOURCES,
        )
        for _, page in zip(range(INHIBITION_PAGES), pages, strict=False):
            found += [_label_set(i) for i in page]
            if len(found) >= INHIBITION_SOURCES:
                break
        return found[:INHIBITION_SOURCES]

    # -- the lifecycle ---------------------------------------------------------------------------------

    def transition(self, alert_id: str, action: Action, actor: str, reason: str, now: float) -> Alert:
        """Acknowledge or resolve, with history and an audit entry; Conflict if not allowed."""
        for _ in range(STATUS_ATTEMPTS):
            status = self.get_item(alert_id)["status"]["S"]
            to = lifecycle.transition(action, status)
            if to is None:  # there already: nothing changes
                return self.get_alert(alert_id)
            change = self.status_change(alert_id, status, to, actor, action, reason, now)
            if self.audit.record(change, actor, f"alert.{action.value}", alert_id, {"reason": reason}, now):
                return self.get_alert(alert_id)
        raise StoreError(f"alert {alert_id} kept changing: could not {action.value} it")

    def set_status(self, aid: str, from_status: str, to_status: str, action: str, reason: str, now: float) -> bool:
        """The pipeline's own status change; False if the status moved meanwhile."""
        return self.transact(self.status_change(aid, from_status, to_status, SYSTEM_ACTOR, action, reason, now))

    def status_change(
        self, aid: str, from_status: str, to_status: str, actor: str, action: str, reason: str, now: float
    ) -> list[dict[str, Any]]:
        """The transaction items of a status change from ``from_status`` (its condition) and its history entry."""
        resolved = to_status == AlertStatus.RESOLVED
        return [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": _key(aid),
                    "UpdateExpression": "SET #st = :to, updated_at = :now" + (" REMOVE act" if resolved else ""),
                    "ConditionExpression": "#st = :from",
                    "ExpressionAttributeNames": {"#st": "status"},
                    "ExpressionAttributeValues": {":to": s(to_status), ":from": s(from_status), ":now": n(now)},
                }
            },
            self._history_put(aid, now, actor, action, reason, from_status, to_status),
        ]

    def history_put(self, aid: str, action: str, reason: str, now: float) -> dict[str, Any]:
        """The transaction item of a history entry of the pipeline's (routed, notified)."""
        return self._history_put(aid, now, SYSTEM_ACTOR, action, reason, None, None)


def _history(item: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        at=iso(float(item["at"]["N"])),
        actor=item["actor"]["S"],
        action=item["action"]["S"],
        reason=item["reason"]["S"],
        from_status=item["from"]["S"] if "from" in item else None,
        to_status=item["to"]["S"] if "to" in item else None,
    )


def _label_set(item: dict[str, Any]) -> dict[str, str]:
    """What matchers see of an alert item read with only the :data:`_LABEL_SET_ATTRIBUTES`."""
    return label_set(
        {
            **{name: item[name]["S"] for name in ("id", "rule_id", "severity", "audience")},
            "customer_id": item["customer_id"]["S"] if "customer_id" in item else None,
            "labels": msgspec.json.decode(item["labels"]["S"]),
        }
    )


def _summary(item: dict[str, Any]) -> AlertSummary:
    return {
        "id": item["id"]["S"],
        "rule_id": item["rule_id"]["S"],
        "severity": item["severity"]["S"],
        "audience": item["audience"]["S"],
        "status": item["status"]["S"],
        "customer_id": item["customer_id"]["S"] if "customer_id" in item else None,
        "labels": msgspec.json.decode(item["labels"]["S"]),
        "title": item["title"]["S"],
        "summary": item["summary"]["S"],
        "first_seen": iso(float(item["first_seen"]["N"])),
        "last_seen": iso(float(item["last_seen"]["N"])),
        "count": int(item["count"]["N"]),
    }


def _alert(item: dict[str, Any], history: list[HistoryEntry]) -> Alert:
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
