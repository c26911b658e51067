"""The alerts table of the aws runtime: alerts with their history (the processor creates and
deduplicates them, people acknowledge and resolve them), and, from the modules it combines,
silences, groups, the notification log and the audit trail. It implements the alert
pipeline's storage Protocols (:mod:`ringfence.alerts.ports`) and decides nothing itself:
evidence, transitions and statuses are :mod:`ringfence.alerts.lifecycle`'s. The item layout
is in :mod:`.items`.

A signal is applied at most once: the dedup pointer keeps, per source (a shard), the
ordinal of the last signal it applied and the alert it went to (whose announcement a
re-applied outbox may still owe), and every change is one transaction with it. That
holds only if each source's hits of an alert are applied in order (a later hit applied first
would hide an earlier one): the processor applies a shard's hits of an alert all together,
and one batch of a shard runs at a time (``ParallelizationFactor`` 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.alerts import lifecycle
from ringfence.alerts.config import InhibitRule
from ringfence.alerts.lifecycle import ACTIVE, FIRING, SYSTEM_ACTOR
from ringfence.alerts.model import (
    SHOWN_ENTRIES,
    Action,
    Alert,
    AlertQuery,
    AlertStatus,
    AlertSummary,
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
    TransactionRefused,
    json_s,
    n,
    s,
    sort_time,
)
from ringfence.runtimes.aws.notification_log import NotificationItems
from ringfence.runtimes.aws.resources import contention_pause_s, error_code
from ringfence.runtimes.aws.silences import SilenceItems

APPLY_ATTEMPTS = 8
STATUS_ATTEMPTS = 8
INHIBITION_SOURCES = 500  # the newest firing alerts an inhibition rule looks at, as embedded
INHIBITION_PAGES = 4  # pages of INHIBITION_SOURCES of the newest alerts read at most to find them
_entries = itertools.count()  # orders a container's entries of one instant as written (the rest: random)
_ATTRIBUTE_LABELS = ("rule_id", "severity", "audience")  # labels alerts keep as attributes (and customer_id)
_LABEL_SET_ATTRIBUTES = ("id", "rule_id", "severity", "audience", "customer_id", "labels")  # what label_set reads


class AlertContention(StoreError):
    """Every attempt to apply an alert's hits lost a race (a hot alert that many shards hit at
    once): the hits wait in their outbox for the next invocation of the shard or the tick."""


class AlertRefused(StoreError):
    """DynamoDB refuses an alert's items as they are (a key or an item over its size): trying
    again will not help, so the hits wait in their outbox, and the other alerts go on."""


MAX_PARTITION_KEY_BYTES = 2048  # DynamoDB's limit for a partition key's value


def pointer_pk(rule_id: str, dedup_key: str) -> str:
    """The dedup pointer's partition key: the rendered key as it is (every pointer written so
    far), or, past DynamoDB's 2,048 bytes (a template of a producer's free text renders up to
    1,000 characters, 4,000 bytes), its SHA-256 under a prefix no key as it is can have."""
    plain = f"d|{rule_id}|{dedup_key}"
    if len(plain.encode()) <= MAX_PARTITION_KEY_BYTES:
        return plain
    return f"dh|{rule_id}|{hashlib.sha256(dedup_key.encode()).hexdigest()}"


@dataclass(frozen=True)
class Applied:
    """What applying an alert's hits did: the alert they went to, whether that is new, and
    whether its SNS message is still owed. Every write of live hits is announced, new alert or
    not (the SQL stores put every hit in their outbox): the pipeline mutes or un-mutes an alert
    at its hits; hits written together are announced once."""

    alert_id: str
    created: bool
    owes_announcement: bool
    last: str  # the ordinal of the hit whose announcement is owed: the alert's last
    # earlier alerts of this source's hits still owed their announcement (a crash or SNS before
    # it, then a person resolved it and later hits opened the next occurrence)
    earlier: tuple[Applied, ...] = ()


def _went_to(source: str) -> str:
    """The pointer's attribute naming the alert ``source``'s last applied hits went to (a top-level
    attribute: pointers written before it have no map to set a path in)."""
    return f"to|{source}"


def _owed(source: str) -> str:
    """The pointer's attribute naming, with the ordinal of their last hit, the earlier alerts of
    ``source``'s hits that were still owed their announcement when its hits went to another."""
    return f"owed|{source}"


def _owed_of(ptr: dict[str, Any] | None, source: str) -> dict[str, str]:
    return {aid: v["S"] for aid, v in ptr.get(_owed(source), {}).get("M", {}).items()} if ptr else {}


def _key(aid: str) -> dict[str, Any]:
    return {"pk": s(f"a|{aid}"), "sk": s("alert")}


class AlertTable(SilenceItems, NotificationItems, GroupItems):
    """The alerts table, for the processor, the dispatcher and the API.

    ``audit_key`` keys the audit chain (``RINGFENCE_SECRET_AUDIT_KEY``); without it, changes
    people make (which are audited) are refused.
    """

    def __init__(self, dynamodb: Any, table: str, audit_key: bytes | None = None) -> None:
        super().__init__(dynamodb, table, cursor_secret=audit_key)  # sealed cursors: see CursorSeal
        self.audit = AuditTrail(dynamodb, table, audit_key)
        self._rng = random.Random()  # nosec B311 # noqa: S311 - backoff jitter, not security

    # -- the processor's side ----------------------------------------------------------------------

    def apply(self, hits: Sequence[tuple[str, AlertSignal]], source: str, now: float) -> Applied | None:
        """Create the alert of live ``hits`` of one alert (one rule and dedup key; ``(ordinal,
        signal)`` in ordinal order) or count them into the active one, once, in one transaction.

        An ordinal orders the signals of ``source`` (zero-padded, so strings compare); a hit at or
        before the pointer's mark for its source was applied already. Returns None when every hit
        was, unless the alert is still owed the announcement of the last. A hot alert (one
        address stuffing credentials, seen by every shard) takes one write for all of an
        invocation's hits, not one each; a lost race is tried again after a pause that grows,
        with jitter, and :class:`AlertContention` says every attempt lost.
        """
        try:
            return self._apply(hits, source, now)
        except TransactionRefused as exc:
            raise AlertRefused(f"{hits[0][1].rule_id}: {exc}") from exc
        except StoreError:
            raise
        except Exception as exc:
            if error_code(exc) != "ValidationException":
                raise
            raise AlertRefused(f"{hits[0][1].rule_id}: DynamoDB refused the alert's items") from exc

    def _apply(self, hits: Sequence[tuple[str, AlertSignal]], source: str, now: float) -> Applied | None:
        rule_id, dedup_key = hits[0][1].rule_id, hits[0][1].dedup_key
        ptr_pk = pointer_pk(rule_id, dedup_key)
        for attempt in range(APPLY_ATTEMPTS):
            if attempt:
                time.sleep(contention_pause_s(attempt, self._rng))
            ptr = self.get(ptr_pk, "ptr")
            version = int(ptr["v"]["N"]) if ptr else 0
            latest = ptr["active"]["S"] if ptr and "active" in ptr else None
            occurrence = int(ptr["occ"]["N"]) if ptr else 0
            mark = ptr.get("marks", {}).get("M", {}).get(source, {}).get("S", "") if ptr else ""
            alert = self.get(f"a|{latest}", "alert") if latest else None
            todo = [(ordinal, signal) for ordinal, signal in hits if ordinal > mark]
            # hits applied before: the alert they went to, not a later occurrence, may be owed
            went_to = ptr.get(_went_to(source), {}).get("S", latest) if ptr else None
            done = hits[: len(hits) - len(todo)]
            owed = _owed_of(ptr, source)
            if not todo:
                if done and went_to is not None:
                    owed[went_to] = done[-1][0]
                still = self._still_owed(owed, len(done), {latest: alert} if latest and alert else {})
                return dataclasses.replace(still[-1], earlier=tuple(still[:-1])) if still else None
            active = latest is not None and alert is not None and alert["status"]["S"] in ACTIVE
            target = latest if active and latest else alert_id(rule_id, dedup_key, occurrence + 1)
            if done and went_to is not None:
                owed[went_to] = done[-1][0]
            owed.pop(target, None)  # the new hits' announcement is owed instead, and covers theirs
            earlier = tuple(self._still_owed(owed, len(done), {latest: alert} if latest and alert else {}))
            ptr_update = self._pointer_update(ptr_pk, version, source, todo[-1][0])
            if earlier:  # kept until announced: a crash may come first
                ptr_update["Update"]["UpdateExpression"] += ", #owed = :owed"
                ptr_update["Update"]["ExpressionAttributeNames"]["#owed"] = _owed(source)
                ptr_update["Update"]["ExpressionAttributeValues"][":owed"] = {
                    "M": {each.alert_id: s(each.last) for each in earlier}
                }
            forget_owed = not earlier and _owed(source) in (ptr or {})  # after the SET clauses, below
            if active and latest is not None and alert is not None:
                ptr_update["Update"]["ExpressionAttributeValues"][":aid"] = s(latest)
                items = [self._more_hits(latest, alert, todo, now), ptr_update]
                created, aid = False, latest
            else:
                occurrence += 1
                aid = alert_id(rule_id, dedup_key, occurrence)
                ptr_update["Update"]["UpdateExpression"] += ", active = :aid, occ = :occ"
                ptr_update["Update"]["ExpressionAttributeValues"].update({":aid": s(aid), ":occ": n(occurrence)})
                first = todo[0][1]
                items = [
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": self._new_alert_item(aid, todo, occurrence, now),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    self._history_put(
                        aid,
                        now,
                        SYSTEM_ACTOR,
                        Decision.CREATED,
                        f"rule {rule_id} matched event {first.event_id}",
                        None,
                        AlertStatus.OPEN,
                    ),
                    ptr_update,
                ]
                created = True
            if forget_owed:
                ptr_update["Update"]["UpdateExpression"] += " REMOVE #owed"
                ptr_update["Update"]["ExpressionAttributeNames"]["#owed"] = _owed(source)
            if self.transact(items):
                return Applied(aid, created, True, todo[-1][0], earlier)
            # a racing writer or a status change: read again
        raise AlertContention(f"could not apply {len(hits)} hit(s) of {rule_id} after {APPLY_ATTEMPTS} attempts")

    def _more_hits(
        self, aid: str, alert: dict[str, Any], hits: Sequence[tuple[str, AlertSignal]], now: float
    ) -> dict[str, Any]:
        first_seen, last_seen = float(alert["first_seen"]["N"]), float(alert["last_seen"]["N"])
        evidence = msgspec.json.decode(alert["evidence"]["S"])
        for _, signal in hits:
            hit = lifecycle.another_hit(first_seen, last_seen, signal)
            first_seen, last_seen = hit.first_seen, hit.last_seen
            evidence = lifecycle.merge_evidence(evidence, signal)
        return {
            "Update": {
                "TableName": self.table,
                "Key": _key(aid),
                # ``by``: the hit now owed its announcement (a replayed outbox sends it if still owed)
                "UpdateExpression": "SET #c = #c + :hits, first_seen = :first, last_seen = :last, "
                "evidence = :ev, updated_at = :now, title = :title, summary = :summary, #by = :ord "
                "REMOVE announced",
                "ConditionExpression": f"#st IN ({', '.join(f':a{i}' for i in range(len(ACTIVE)))})",
                "ExpressionAttributeNames": {"#c": "count", "#st": "status", "#by": "by"},
                "ExpressionAttributeValues": {
                    ":hits": n(len(hits)),
                    ":ord": s(hits[-1][0]),
                    ":first": n(first_seen),
                    ":last": n(last_seen),
                    ":ev": json_s(evidence),
                    ":now": n(now),
                    ":title": s(hits[-1][1].title),
                    ":summary": s(hits[-1][1].summary),
                    **{f":a{i}": s(status) for i, status in enumerate(ACTIVE)},
                },
            }
        }

    def _still_owed(self, owed: dict[str, str], applied: int, read: dict[str, dict[str, Any]]) -> list[Applied]:
        """Of the alerts ``owed`` names (alert: the ordinal of the last hit applied to it), in
        order, those still owed their announcement: the hit is still the alert's last, and it
        was not announced (``read``: alert items read already). ``applied``: how many hits were
        applied before (an alert they may have made is counted created)."""
        still: list[Applied] = []
        for aid, ordinal in owed.items():
            alert = read[aid] if aid in read else self.get(f"a|{aid}", "alert")
            if alert is not None and alert.get("by", {}).get("S") == ordinal and "announced" not in alert:
                created = int(alert["count"]["N"]) <= applied  # these hits made it
                still.append(Applied(aid, created, True, ordinal))
        return still

    def _pointer_update(self, pk: str, version: int, source: str, ordinal: str) -> dict[str, Any]:
        """The pointer's update for ``source``'s hits up to ``ordinal``; the caller sets ``:aid``,
        the alert they go to."""
        update: dict[str, Any] = {"TableName": self.table, "Key": {"pk": s(pk), "sk": s("ptr")}}
        values: dict[str, Any] = {":next": n(version + 1), ":ord": s(ordinal)}
        if version:
            update |= {
                "UpdateExpression": "SET v = :next, marks.#src = :ord, #to = :aid",
                "ConditionExpression": "v = :v",
                "ExpressionAttributeNames": {"#src": source, "#to": _went_to(source)},
                "ExpressionAttributeValues": {**values, ":v": n(version)},
            }
        else:  # a map must exist before a path in it can be set: the first write makes it whole
            update |= {
                "UpdateExpression": "SET v = :next, marks = :marks, #to = :aid",
                "ConditionExpression": "attribute_not_exists(pk)",
                "ExpressionAttributeNames": {"#to": _went_to(source)},
                "ExpressionAttributeValues": {**values, ":marks": {"M": {source: s(ordinal)}}},
            }
        return {"Update": update}

    def _new_alert_item(
        self, aid: str, hits: Sequence[tuple[str, AlertSignal]], occurrence: int, now: float
    ) -> dict[str, Any]:
        """The item of an alert the first of ``hits`` creates, the others counted into it."""
        signal = hits[0][1]
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
            "created_at": n(now),
            "updated_at": n(now),
            "count": n(len(hits)),
            "by": s(hits[-1][0]),
            "act": s(signal.rule_id),  # in ``by_active`` until resolved
            "gp": s("alerts"),
            "gs": s(f"{sort_time(now)}|{aid}"),
        }
        first_seen = last_seen = signal.occurred_at
        evidence = lifecycle.new_evidence(signal)
        title, summary = signal.title, signal.summary
        for _, more in hits[1:]:
            hit = lifecycle.another_hit(first_seen, last_seen, more)
            first_seen, last_seen, title, summary = hit.first_seen, hit.last_seen, hit.title, hit.summary
            evidence = lifecycle.merge_evidence(evidence, more)
        item |= {
            "title": s(title),
            "summary": s(summary),
            "evidence": json_s(evidence),
            "first_seen": n(first_seen),
            "last_seen": n(last_seen),
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
        send it again. A later hit's message stays owed (the condition). A hot alert's item may
        be in another shard's transaction: then it stays owed, and a re-applied outbox sends
        it again, which the dispatcher's notification log absorbs."""
        try:
            self.update_if(
                _key(aid),
                UpdateExpression="SET announced = :t",
                ConditionExpression="#by = :ord",
                ExpressionAttributeNames={"#by": "by"},
                ExpressionAttributeValues={":t": {"BOOL": True}, ":ord": s(ordinal)},
            )
        except Exception as exc:
            if error_code(exc) != "TransactionConflictException":
                raise

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
        """An alert with its newest history entries (this runtime keeps no comments)."""
        alert = _alert(self.get_item(alert_id), [])
        history = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :h)",
            "ExpressionAttributeValues": {":pk": s(f"a|{alert_id}"), ":h": s("h|")},
            "ConsistentRead": True,
        }
        reply = self.db.query(TableName=self.table, ScanIndexForward=False, Limit=SHOWN_ENTRIES, **history)
        alert.history = [_history(i) for i in reversed(reply.get("Items", []))]
        counted = len(alert.history)
        while "LastEvaluatedKey" in reply:  # older ones: counted, not held
            reply = self.db.query(
                TableName=self.table,
                ScanIndexForward=False,
                Select="COUNT",
                ExclusiveStartKey=reply["LastEvaluatedKey"],
                **history,
            )
            counted += reply["Count"]
        alert.history_omitted = counted - len(alert.history)
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
