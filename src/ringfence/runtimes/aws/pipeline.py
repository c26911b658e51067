"""The alert pipeline's state in DynamoDB (:class:`~ringfence.alerts.ports.PipelineStore`), so
the aws runtime runs the embedded runtime's :class:`~ringfence.alerts.dispatcher.Dispatcher`
stages. It decides nothing.

DynamoDB has no transaction that reads, so a unit of work (:class:`DynamoBatch`) reads as it
goes, remembers the version of each group it read, and writes at its end in one transaction
conditional on those versions: if another dispatcher changed one of the groups meanwhile,
nothing is written and the unit raises :class:`LostRace` (the work is done again on a fresh
read). A unit too big for one transaction (100 items: a flush of many groups) is split
between groups, never within one (a group with its members and its notification).
A status change is written with its alert's history (and the announcement it owes, see
:mod:`.announcements`) in the unit's end, conditional on the status read (else LostRace too).
Claims are single conditional writes, made at once.

The outbox of alert changes is the dispatch Lambda's batch of SQS messages (:meth:`AwsPipeline.receive`),
and the changes the pipeline announces itself (auto-resolve): a change is consumed when the unit
that handled it commits; the rest stay on the queue, or owed (the tick publishes them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ringfence.alerts.config import InhibitRule
from ringfence.alerts.delivery import NextStep
from ringfence.alerts.grouping import GroupState
from ringfence.alerts.lifecycle import ACTIVE, SYSTEM_ACTOR
from ringfence.alerts.model import AlertChange, AlertSummary, Notification, NotificationStatus
from ringfence.alerts.ports import OutboxEntry
from ringfence.alerts.silences import Silence
from ringfence.errors import StoreError
from ringfence.runtimes.aws.alerts import AlertTable
from ringfence.runtimes.aws.announcements import OwedMarkers
from ringfence.runtimes.aws.groups import StoredGroup
from ringfence.runtimes.aws.state import MAX_TRANSACTION_ITEMS

_Unit = tuple[str, str] | None  # ("group", key) or ("alert", id): written together; None: alone


class LostRace(StoreError):
    """Another writer changed a group or an alert's status this unit of work read: do the work again."""


class AwsPipeline:
    """The :class:`~ringfence.alerts.ports.PipelineStore` over the alerts table, with the
    current invocation's messages as the outbox."""

    def __init__(self, alerts: AlertTable) -> None:
        self.alerts = alerts
        self.markers = OwedMarkers(alerts)
        self.outbox: list[OutboxEntry] = []
        self.owed: dict[int, float] = {}  # seq -> when its change was owed (the pipeline's own)
        self.consumed = 0  # the outbox's entries up to this seq are handled
        self.fresh: set[str] = set()  # notifications this container added: the index may lag

    def receive(self, alert_id: str, change: AlertChange, owed_at: float | None = None) -> int:
        """Put a change in the outbox; returns its seq (consumed once ``consumed`` reaches it).
        ``owed_at``: the change's owed marker, settled once it is consumed."""
        seq = (self.outbox[-1].seq if self.outbox else self.consumed) + 1
        self.outbox.append(OutboxEntry(seq, alert_id, change))
        if owed_at is not None:
            self.owed[seq] = owed_at
        return seq

    def pending(self) -> bool:
        return any(e.seq > self.consumed for e in self.outbox)

    def release(self) -> None:
        """Forget what was not consumed: messages go back to the queue, owed changes stay owed."""
        self.outbox.clear()
        self.owed.clear()

    def settle_consumed(self) -> None:
        """Settle the owed markers of the pipeline's own changes that are consumed."""
        for entry in self.outbox:
            if entry.seq <= self.consumed and entry.seq in self.owed:
                self.markers.settle(entry.alert_id, entry.change, self.owed.pop(entry.seq))

    @contextmanager
    def pipeline(self) -> Iterator[DynamoBatch]:
        batch = DynamoBatch(self)
        yield batch
        batch.commit()

    def due_notifications(
        self, now: float, limit: int, *, receivers: Sequence[str] = (), each: int = 0
    ) -> list[Notification]:
        """As the SQL stores', but ``receivers`` are looked for among what the index gives first
        (several times ``limit``): past that, a receiver's backlog can hide another's."""
        keyed = {x.id: x for x in self.alerts.due_notifications(now, limit if not receivers else 4 * limit)}
        if self.fresh:
            for x in self.alerts.notifications_of(sorted(self.fresh)):
                keyed.setdefault(x.id, x)
            self.fresh.clear()
        due = [x for x in keyed.values() if x.status is NotificationStatus.PENDING and x.next_attempt_at <= now]
        due.sort(key=lambda x: x.next_attempt_at)
        taken, ranked = due[:limit], Counter[str]()
        for x in due[limit:]:  # each of receivers' ``each`` longest due, past the first ``limit``
            ranked[x.receiver] += 1
            if x.receiver in receivers and ranked[x.receiver] <= each:
                taken.append(x)
        return taken

    def next_due(self) -> float | None:
        """When the next group flush or notification attempt is due, as stored (None: nothing
        waits). Read after a step: what it did (a flush, a send) is no longer due."""
        known = [t for t in (self.alerts.next_flush(), self.alerts.next_attempt()) if t is not None]
        return min(known, default=None)


class DynamoBatch:
    """One unit of work of the dispatcher (:class:`~ringfence.alerts.ports.PipelineBatch`)."""

    def __init__(self, pipeline: AwsPipeline) -> None:
        self.pipeline = pipeline
        self.table = pipeline.alerts
        self._read: dict[str, StoredGroup | None] = {}  # groups as read (None: there was none)
        self._members: dict[str, frozenset[str]] = {}  # their alerts as read
        self._saved: dict[str, GroupState] = {}
        self._dropped: set[str] = set()
        self._writes: list[tuple[_Unit, dict[str, Any]]] = []  # (what it is written with, item)
        self._consumed: int | None = None
        self._announced: list[tuple[str, AlertChange, float]] = []
        self._added: set[str] = set()

    # -- the outbox ----------------------------------------------------------------------------

    def changes(self, limit: int) -> list[OutboxEntry]:
        return [e for e in self.pipeline.outbox if e.seq > self.pipeline.consumed][:limit]

    def consumed(self, through_seq: int) -> None:
        self._consumed = through_seq

    def announce(self, alert_id: str, change: AlertChange, now: float) -> None:
        """Owed with the alert's status change; handed to this pipeline's outbox once written."""
        self._writes.append((("alert", alert_id), self.pipeline.markers.owe(alert_id, change, now)))
        self._announced.append((alert_id, change, now))

    # -- alerts --------------------------------------------------------------------------------

    def alert(self, alert_id: str) -> AlertSummary | None:
        found = self.table.views([alert_id])
        return found[0] if found else None

    def set_status(self, alert_id: str, from_status: str, to_status: str, action: str, reason: str, now: float) -> bool:
        """Written at the unit's end, conditional on ``from_status`` (LostRace if it moved)."""
        change = self.table.status_change(alert_id, from_status, to_status, SYSTEM_ACTOR, action, reason, now)
        self._writes += [(("alert", alert_id), item) for item in change]
        return True

    def note(self, alert_ids: Sequence[str], action: str, reason: str, now: float) -> None:
        self._writes += [(None, self.table.history_put(aid, action, reason, now)) for aid in alert_ids]

    def current_silences(self, now: float) -> list[Silence]:
        return self.table.current_silences(now)

    def inhibition_sources(self, rule: InhibitRule, labels: Mapping[str, str]) -> list[dict[str, str]]:
        return self.table.inhibition_sources(rule, labels)

    def quiet_alerts(self, rule_id: str, since: float) -> list[tuple[str, str]]:
        alerts = self.table.views(self.table.quiet_active(rule_id, since))
        return [(a["id"], a["status"]) for a in alerts if a["status"] in ACTIVE]

    # -- groups --------------------------------------------------------------------------------

    def _held(self, key: str) -> GroupState | None:
        """The group as this unit has it: saved, dropped, or as read."""
        if key in self._dropped:
            return None
        if key in self._saved:
            return self._saved[key]
        read = self._read[key]
        return read.state if read is not None else None

    def _read_as(self, key: str, stored: StoredGroup | None) -> GroupState | None:
        if key not in self._read:  # the first read is the one writes are conditional on
            self._read[key] = stored
            self._members[key] = frozenset(stored.state.alert_ids) if stored else frozenset()
        return self._held(key)

    def group(self, key: str) -> GroupState | None:
        if key not in self._read:
            return self._read_as(key, self.table.group(key))
        return self._held(key)

    def save_group(self, group: GroupState) -> None:
        self.group(group.key)
        self._saved[group.key] = group
        self._dropped.discard(group.key)

    def drop_group(self, key: str) -> None:
        self.group(key)
        self._saved.pop(key, None)
        self._dropped.add(key)

    def groups_with(self, alert_id: str) -> list[GroupState]:
        found = (self._read_as(g.state.key, g) for g in self.table.groups_with(alert_id))
        return [g for g in found if g is not None and alert_id in g.alert_ids]

    def in_group(self, key: str, alert_id: str) -> bool:
        """Reads only the parts of ``key`` it joined (by its membership items), and those this
        unit changed (not written yet)."""
        parts = {k for k in self.table.joined(alert_id, key) if k == key or k.startswith(key + ".")}
        parts |= {k for k in self._saved if k == key or k.startswith(key + ".")}
        return any((g := self.group(k)) is not None and alert_id in g.alert_ids for k in parts)

    def due_groups(self, now: float, limit: int) -> list[GroupState]:
        found = (self._read_as(g.state.key, g) for g in self.table.due_groups(now, limit))
        return [g for g in found if g is not None and g.next_flush_at <= now]

    # -- the notification log ------------------------------------------------------------------

    def add_notification(
        self, notification_id: str, group_key: str, receiver: str, payload: dict[str, Any], now: float
    ) -> None:
        if notification_id in self._added or self.table.notification(notification_id) is not None:
            return  # owed once: adding it again changes nothing
        put = self.table.notification_put(notification_id, group_key, receiver, payload, now)
        self._writes.append((("group", group_key), put))
        self._added.add(notification_id)

    def claim(self, notification_id: str, now: float, lease_s: float) -> bool:
        return self.table.claim(notification_id, now, lease_s)

    def supersede(self, notification_id: str, by: str, now: float) -> Notification | None:
        """Written with ``by``'s group, conditional on its still being pending (LostRace if it
        was sent meanwhile: the flush is done again, and finds it sent)."""
        older = self.table.notification(notification_id)
        if older is None or older.status is not NotificationStatus.PENDING:
            return None
        self._writes.append((("group", older.group_key), self.table.supersede_update(notification_id, by, now)))
        return older

    def record_attempt(self, notification_id: str, step: NextStep, now: float) -> bool:
        if step.status is not NotificationStatus.SENT:
            current = self.table.notification(notification_id)
            if current is not None and current.status is NotificationStatus.SUPERSEDED:
                return False  # (superseded after this read: the write's condition fails, LostRace)
        self._writes.append((None, self.table.attempt_update(notification_id, step, now)))
        return True

    def forget_sent(self, before: float, limit: int) -> int:
        return 0  # DynamoDB's TTL deletes sent notifications (notification_log.SENT_TTL_S)

    def forget_silences(self, ended_before: float, limit: int) -> int:
        return 0  # DynamoDB's TTL deletes ended silences (their ``ttl``)

    # -- the end of the unit -------------------------------------------------------------------

    def commit(self) -> None:
        """Write what the unit decided, each group (and each alert's status) with what depends
        on it; LostRace if a group or status changed since it was read (of a unit split in
        parts, the other parts stand)."""
        units: dict[_Unit, list[dict[str, Any]]] = {}
        for key in {*self._saved, *self._dropped}:
            units[("group", key)] = self._group_writes(key)
        loose: list[list[dict[str, Any]]] = []
        for unit, item in self._writes:
            if unit is None:
                loose.append([item])
            else:
                units.setdefault(unit, []).append(item)
        lost = [unit for unit in self._packed([*units.values(), *loose]) if not self.table.transact(unit)]
        if lost:
            raise LostRace(f"{len(lost)} of the dispatcher's writes lost a race; read again")
        p = self.pipeline
        if self._consumed is not None:
            p.consumed = max(p.consumed, self._consumed)
            p.settle_consumed()
        for alert_id, change, at in self._announced:
            p.receive(alert_id, change, at)
        p.fresh |= self._added

    def _group_writes(self, key: str) -> list[dict[str, Any]]:
        read = self._read.get(key)
        version = read.version if read is not None else 0
        if key in self._dropped:
            return [self.table.group_drop(StoredGroup(read.state, version))] if read is not None else []
        state = self._saved[key]
        joined = [aid for aid in state.alert_ids if aid not in self._members.get(key, frozenset())]
        return [
            self.table.group_write(StoredGroup(state, version)),
            *(self.table.membership_put(aid, key) for aid in joined),
        ]

    @staticmethod
    def _packed(units: list[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
        """``units`` in as few transactions as they fit, never one split across two."""
        chunk: list[dict[str, Any]] = []
        for unit in (u for u in units if u):
            if chunk and len(chunk) + len(unit) > MAX_TRANSACTION_ITEMS:
                yield chunk
                chunk = []
            chunk += unit
        if chunk:
            yield chunk
