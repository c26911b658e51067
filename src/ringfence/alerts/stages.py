"""The stages of the alert pipeline (see :mod:`ringfence.alerts.dispatcher` for how they run).

Two shapes, as in Alertmanager's ``notify``: a :class:`ChangeStage` acts on the alert changes
of one outbox batch inside its unit of work (:class:`Mute`, :class:`Group`, run by
:class:`Intake`); a :class:`Stage` does what is due at a time (:class:`Flush`,
:class:`Deliver`, :class:`AutoResolve`, :class:`Retention`). Each decides with the pure
functions of :mod:`.lifecycle`, :mod:`.muting`, :mod:`.grouping` and :mod:`.delivery`, and
keeps what it decided through a :class:`~ringfence.alerts.ports.PipelineStore`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from ringfence.alerts.config import AlertingConfig, InhibitRule, RetryPolicy, Route
from ringfence.alerts.delivery import NextStep, after_attempt
from ringfence.alerts.grouping import (
    GroupState,
    after_flush,
    group_key,
    keep_group,
    new_group,
    on_change,
    part_key,
    should_send,
)
from ringfence.alerts.lifecycle import FIRING, muted_status, transition
from ringfence.alerts.model import (
    Action,
    AlertChange,
    AlertStatus,
    AlertSummary,
    Notification,
    NotificationStatus,
    PipelineAction,
)
from ringfence.alerts.muting import label_set, mute_reason
from ringfence.alerts.notify import Delivery, Notifier, Outcome
from ringfence.alerts.notify.base import one_line
from ringfence.alerts.ports import PipelineBatch, PipelineStore
from ringfence.alerts.silences import SILENCE_KEPT_S
from ringfence.alerts.stream import AlertPublisher
from ringfence.clock import Clock
from ringfence.metrics import Metrics

log = logging.getLogger("ringfence.dispatcher")

BATCH = 500  # outbox entries per pass
DUE_GROUPS = 100
DUE_NOTIFICATIONS = 50
SENDS_PER_RECEIVER = 2  # of one receiver, at once and in one pass: one that hangs holds only these
PASS_WAIT_S = 1.0  # how long a dispatcher's pass waits for its sends before it routes again
CLAIM_LEASE_S = 120.0  # longer than one send with its timeout
SEND_MARGIN_S = 5.0  # beyond a receiver's timeout: what an attempt takes around its request
HOUSEKEEPING_EVERY_S = 10.0
SENT_RETENTION_S = 30 * 86400.0  # sent notifications are kept this long; dead letters until re-driven
RETENTION_SLICE = 2_000  # sent notifications forgotten a transaction
RETENTION_SLICES = 25  # a call's most: 50,000 every HOUSEKEEPING_EVERY_S, 5,000 a second kept up with
NOT_MUTED = "no silence or inhibition matches any more"


@dataclass
class Changed:
    """One change of an alert going through the stages; ``alert`` is its state now."""

    change: AlertChange
    alert: AlertSummary


class ChangeStage(Protocol):
    """A stage over the changes of one outbox batch: acts on them, returns those that go on."""

    def __call__(self, batch: PipelineBatch, changes: list[Changed], now: float) -> list[Changed]: ...


class Stage(Protocol):
    """A stage of the dispatcher's pass: does what is due at ``now``; returns how much (0: idle)."""

    def __call__(self, now: float) -> int: ...


class Mute:
    """Silences, then inhibition (Alertmanager's ``MuteStage`` with its two ``Muter``s): a muted
    open alert is suppressed, one no longer muted opens again (history says why); muted alerts
    go no further."""

    def __init__(self, rules: Sequence[InhibitRule]) -> None:
        self.rules = rules

    def __call__(self, batch: PipelineBatch, changes: list[Changed], now: float) -> list[Changed]:
        silences = batch.current_silences(now)
        kept = []
        for changed in changes:
            alert = changed.alert
            if changed.change is AlertChange.FIRING:
                reason = mute_reason(silences, self.rules, label_set(alert), batch.inhibition_sources, now)
                status = muted_status(alert["status"], muted=reason is not None)
                if status is not None:
                    action = PipelineAction.SUPPRESS if reason else PipelineAction.UNSUPPRESS
                    if batch.set_status(alert["id"], alert["status"], status, action, reason or NOT_MUTED, now):
                        alert["status"] = status
                if reason is not None:
                    continue
            kept.append(changed)
        return kept


class Group:
    """A firing alert joins the group of each route it matches (Alertmanager's routing and
    aggregation); an acknowledged or resolved one reschedules the groups holding it (a
    resolution is sent at once when ``notify_resolved``)."""

    def __init__(self, config: AlertingConfig, routes: Mapping[str, Route], receivers: Mapping[str, Notifier]) -> None:
        self.tree = config.route
        self.notify_resolved = config.notify_resolved
        self.routes = routes
        self.receivers = receivers

    def __call__(self, batch: PipelineBatch, changes: list[Changed], now: float) -> list[Changed]:
        for changed in changes:
            if changed.change is AlertChange.FIRING:
                self._join(batch, changed.alert, now)
                continue
            urgent = changed.change is AlertChange.RESOLVED and self.notify_resolved
            for group in batch.groups_with(changed.alert["id"]):
                route = self.routes.get(group.route)
                if route is not None:
                    on_change(group, route, now, urgent=urgent)
                    batch.save_group(group)
        return changes

    def _join(self, batch: PipelineBatch, alert: AlertSummary, now: float) -> None:
        labels = label_set(alert)
        for route in self.tree.match(labels):
            if route.receiver not in self.receivers:
                continue  # the dashboard: the live stream and the API are enough
            key, group_labels = group_key(route, labels)
            if batch.in_group(key, alert["id"]):
                continue  # hit again (every hit is told), or a replay: it joined a part already
            first = batch.group(key) or new_group(route, key, group_labels, now)
            first.joined = max(first.joined, len(first.alert_ids))  # a group stored before parts counted none
            in_part = part_key(key, first.joined)
            group = first if in_part == key else batch.group(in_part) or new_group(route, in_part, group_labels, now)
            first.joined += 1
            group.alert_ids.append(alert["id"])
            on_change(group, route, now)
            batch.save_group(group)
            if group is not first:
                batch.save_group(first)  # its count
            batch.note([alert["id"]], PipelineAction.ROUTE, f"routed by {route.id} to {route.receiver}", now)


class Intake:
    """Takes the outbox's changes through the change stages in one unit of work, then shows
    every change on the live stream."""

    def __init__(self, store: PipelineStore, stages: Sequence[ChangeStage], stream: AlertPublisher | None) -> None:
        self.store = store
        self.stages = stages
        self.stream = stream

    def __call__(self, now: float) -> int:
        with self.store.pipeline() as batch:
            entries = batch.changes(BATCH)
            if not entries:
                return 0
            alerts: dict[str, AlertSummary] = {}
            shown: list[Changed] = []
            changes: list[Changed] = []
            firing: set[str] = set()
            for entry in entries:
                alert = alerts.get(entry.alert_id) or batch.alert(entry.alert_id)
                if alert is None:
                    continue
                alerts[entry.alert_id] = alert
                changed = Changed(entry.change, alert)
                shown.append(changed)
                if entry.change is AlertChange.FIRING:
                    if alert["status"] == AlertStatus.RESOLVED or entry.alert_id in firing:
                        continue  # resolved since, or already in this batch
                    firing.add(entry.alert_id)
                changes.append(changed)
            for stage in self.stages:
                changes = stage(batch, changes, now)
            batch.consumed(entries[-1].seq)
        if self.stream is not None:
            for changed in shown:
                self.stream.publish({"change": changed.change, **changed.alert})
        return len(entries)


class Flush:
    """Due groups become notifications in the log (Alertmanager's dedup stage: a group unchanged
    since its last notification is notified again only after its ``repeat_interval``)."""

    def __init__(self, store: PipelineStore, routes: Mapping[str, Route], notify_resolved: bool) -> None:
        self.store = store
        self.routes = routes
        self.notify_resolved = notify_resolved

    def __call__(self, now: float) -> int:
        added = 0
        with self.store.pipeline() as batch:
            for group in batch.due_groups(now, DUE_GROUPS):
                route = self.routes.get(group.route)
                if route is None:  # the config changed: the route is gone
                    batch.drop_group(group.key)
                    continue
                alerts = [a for a in map(batch.alert, group.alert_ids) if a is not None]
                firing = [a for a in alerts if a["status"] in FIRING]
                resolved = [a for a in alerts if a["status"] == AlertStatus.RESOLVED]
                shown = firing + (resolved if self.notify_resolved else [])
                digest = hashlib.sha256(repr(sorted((a["id"], a["status"]) for a in shown)).encode()).hexdigest()
                send = bool(shown) and should_send(group, digest, route, now)
                if send:
                    self._add(batch, group, firing, shown, digest, now)
                    added += 1
                after_flush(group, route, now, sent=send, firing=bool(firing), digest=digest)
                group.alert_ids = [a["id"] for a in firing]
                if keep_group(group):
                    batch.save_group(group)
                else:
                    batch.drop_group(group.key)
        return added

    @staticmethod
    def _add(
        batch: PipelineBatch,
        group: GroupState,
        firing: list[AlertSummary],
        shown: list[AlertSummary],
        digest: str,
        now: float,
    ) -> None:
        # the id of the n-th notification of this group since it formed, of what it shows: a
        # replayed flush adds nothing twice, and a group formed again after it was dropped (even
        # within the same instant) starts new ids
        incarnation = f"{group.key}|{group.created_at!r}|{group.flushes + 1}|{digest}"
        notification_id = "n_" + hashlib.sha256(incarnation.encode()).hexdigest()[:24]
        shown = shown + _superseded(batch, group, notification_id, shown, now)
        payload = {
            "version": "1",
            "notification_id": notification_id,
            "receiver": group.receiver,
            "status": "firing" if firing else "resolved",
            "group_key": group.key,
            "group_labels": group.labels,
            "alerts": shown,
        }
        batch.add_notification(notification_id, group.key, group.receiver, payload, now)
        group.last_notification = notification_id


def _superseded(
    batch: PipelineBatch, group: GroupState, by: str, shown: list[AlertSummary], now: float
) -> list[AlertSummary]:
    """The group's previous notification, if it is still waiting for an attempt, is superseded
    by notification ``by``: sent after it (a retry), it would tell the receiver of alerts as
    they no longer are (a firing one after its resolution re-opens an incident). Returns what
    ``by`` must carry of it besides ``shown``: each alert it told that ``by`` does not show
    (resolved since and shown once, or muted, or resolved under ``notify_resolved: false``),
    as it told it, so the receiver learns nothing less than the retry would have told it."""
    if group.last_notification is None or group.last_notification == by:
        return []
    older = batch.supersede(group.last_notification, by, now)
    if older is None:  # sent, dead or forgotten: it told what it had to
        return []
    ids = {a["id"] for a in shown}
    return [a for a in older.payload["alerts"] if a["id"] not in ids]


@dataclass(frozen=True)
class _Attempt:
    """A send that ended, for the dispatcher's thread to record: what the receiver answered,
    and when."""

    notification: Notification
    result: Delivery
    at: float


class Deliver:
    """Due notifications to their receivers, each claimed first so that two dispatchers never
    send one at once; retries and dead letters as :func:`~ringfence.alerts.delivery.after_attempt`
    decides.

    Receivers are kept apart: at most :data:`SENDS_PER_RECEIVER` sends of one receiver are under
    way at once, on threads of their own, and a pass looks at each receiver's longest-due
    notifications besides the longest due of all, so a receiver that hangs until its timeout,
    or one producer's flood of notifications to one receiver, holds up only that receiver's.
    A group has one send under way at a time, so its notifications arrive in the order they
    were made (a newer one supersedes an older one's retry: :func:`_superseded`).
    The threads only send; the pass records what they got (one writer, one transaction for all
    of them). ``wait`` (seconds; None: until every send ends) is how long a pass waits for its
    sends: the embedded and kafka dispatchers wait :data:`PASS_WAIT_S` and go on routing while
    slow sends finish (their results are recorded by a later pass); a Lambda function waits for
    all of them.

    ``deadline`` (:func:`time.monotonic` seconds; None: none) is when the process running the
    pass may be stopped (a Lambda function's timeout): no notification is claimed unless its
    send, up to ``timeouts`` of its receiver and :data:`SEND_MARGIN_S`, ends before it, since a
    process killed after a send but before its result is kept sends it again once the claim's
    lease runs out. What is left stays due for the next pass.
    """

    def __init__(
        self,
        store: PipelineStore,
        notifiers: Mapping[str, Notifier],
        policy: RetryPolicy,
        clock: Clock,
        metrics: Metrics,
        timeouts: Mapping[str, float] | None = None,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.policy = policy
        self.clock = clock
        self.metrics = metrics
        self.timeouts = timeouts or {}
        self.deadline: float | None = None
        self.wait: float | None = None
        self.on_sent: Callable[[], None] = lambda: None  # a send ended: a pass has a result to record
        self.rng = random.Random()  # nosec B311 # noqa: S311 - retry jitter, not security
        self._lock = threading.Lock()
        self._under_way: dict[str, set[str]] = {}  # by receiver, notifications sent and not yet recorded
        self._groups_under_way: set[str] = set()  # their groups' keys
        self._ended: queue.SimpleQueue[_Attempt] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(
            max_workers=SENDS_PER_RECEIVER * max(1, len(notifiers)), thread_name_prefix="ringfence-send"
        )

    def __call__(self, now: float) -> int:
        recorded = self._record_ended()
        due = self.store.due_notifications(
            now, DUE_NOTIFICATIONS, receivers=sorted(self.notifiers), each=SENDS_PER_RECEIVER
        )
        picked: list[Notification] = []
        with self._lock:
            taken = {receiver: len(ids) for receiver, ids in self._under_way.items()}
            busy = {i for ids in self._under_way.values() for i in ids}
            groups = set(self._groups_under_way)
        for notification in due:
            if notification.id in busy or taken.get(notification.receiver, 0) >= SENDS_PER_RECEIVER:
                continue  # (a send that outlasted its claim's lease is still its own)
            if notification.group_key in groups:
                continue  # a group's notifications reach its receiver in the order they were made
            if not self._time_for(notification):
                log.info("due notifications left for the next pass: too little time left")
                break
            taken[notification.receiver] = taken.get(notification.receiver, 0) + 1
            groups.add(notification.group_key)
            picked.append(notification)
        if picked:
            with self.store.pipeline() as batch:
                claimed = [n for n in picked if batch.claim(n.id, now, CLAIM_LEASE_S)]
            sends = [self._start(n) for n in claimed]
            done, _ = futures.wait(sends, timeout=self.wait if self.deadline is None else None)
            for send in done:  # the process is ending (a Lambda function's timeout, an exit): so is the pass
                ended = send.exception()
                if ended is not None and not isinstance(ended, Exception):
                    raise ended
            recorded += self._record_ended()
            return recorded + len(claimed)
        return recorded

    def close(self) -> None:
        """Let the sends under way end (each within its receiver's timeout), record them, stop."""
        self._pool.shutdown(wait=True)
        self._record_ended()

    def _start(self, n: Notification) -> futures.Future[None]:
        with self._lock:
            self._under_way.setdefault(n.receiver, set()).add(n.id)
            self._groups_under_way.add(n.group_key)

        def send() -> None:
            try:
                result = self._send(n)
            except BaseException:  # the process is ending: nothing to record, the lease runs out
                with self._lock:
                    self._under_way[n.receiver].discard(n.id)
                    self._groups_under_way.discard(n.group_key)
                raise
            self._ended.put(_Attempt(n, result, self.clock.time()))
            self.on_sent()

        return self._pool.submit(send)

    def _time_for(self, n: Notification) -> bool:
        """Whether an attempt at ``n`` ends before the deadline, if there is one."""
        needs = self.timeouts.get(n.receiver, 0.0) + SEND_MARGIN_S
        return self.deadline is None or time.monotonic() + needs <= self.deadline

    def _send(self, n: Notification) -> Delivery:
        notifier = self.notifiers.get(n.receiver)
        if notifier is None:
            return Delivery(Outcome.FAILED, "receiver is no longer configured")
        try:
            result = notifier.send(n.payload, n.id, self.clock.time())
        except Exception as exc:  # a receiver's bug: an attempt that failed, counted, never a pass that ends
            log.exception("sending notification %s to %s failed unexpectedly", n.id, n.receiver)
            return Delivery(Outcome.RETRY, f"{type(exc).__name__} (an internal error, logged)")
        # what any receiver answered, as text every store keeps and people read (no NUL, no line break)
        return Delivery(result.outcome, one_line(result.detail), result.retry_after)

    def _record(self, batch: PipelineBatch, attempt: _Attempt) -> tuple[Notification, NextStep] | None:
        """Record ``attempt`` in ``batch``; the notification and its step if it is now dead."""
        n, at = attempt.notification, attempt.at
        if n.receiver not in self.notifiers:
            step = NextStep(NotificationStatus.DEAD, n.attempts, at, attempt.result.detail)
        else:
            step = after_attempt(attempt.result, n.attempts, self.policy, at, self.rng)
        if not batch.record_attempt(n.id, step, at):
            return None  # superseded meanwhile: the newer one tells its alerts
        alert_ids = [a["id"] for a in n.payload["alerts"]]
        if step.status is NotificationStatus.SENT:
            batch.note(alert_ids, PipelineAction.NOTIFY, f"notified via {n.receiver} ({n.id})", at)
        elif step.status is NotificationStatus.DEAD:
            reason = f"notification {n.id} to {n.receiver} failed for good: {step.detail}"
            batch.note(alert_ids, PipelineAction.NOTIFY, reason, at)
            return n, step
        return None

    def _record_ended(self) -> int:
        """Record the sends that ended, in one transaction; how many."""
        ended: list[_Attempt] = []
        while True:
            try:
                ended.append(self._ended.get_nowait())
            except queue.Empty:
                break
        if not ended:
            return 0
        dead: list[tuple[Notification, NextStep]] = []
        recorded = ended
        try:
            try:
                with self.store.pipeline() as batch:
                    dead = [d for attempt in ended if (d := self._record(batch, attempt)) is not None]
            except Exception:  # one that the store refuses must not hold back the others' results
                if len(ended) == 1:
                    raise
                log.warning("recording %d sends at once failed; recording them one by one", len(ended))
                dead, recorded = [], []
                for attempt in ended:
                    try:
                        with self.store.pipeline() as batch:
                            if (d := self._record(batch, attempt)) is not None:
                                dead.append(d)
                        recorded.append(attempt)
                    except Exception:  # its claim's lease runs out and it is sent again
                        log.exception("recording notification %s failed", attempt.notification.id)
            for attempt in recorded:
                self.metrics.notifications.labels(attempt.notification.receiver, attempt.result.outcome.value).inc()
        finally:  # recorded, or not (the store failed): its claim's lease runs out and it is sent again
            with self._lock:
                for attempt in ended:
                    self._under_way[attempt.notification.receiver].discard(attempt.notification.id)
                    self._groups_under_way.discard(attempt.notification.group_key)
        for n, step in dead:
            log.warning("notification %s to %s is a dead letter: %s", n.id, n.receiver, step.detail)
        return len(ended)


class AutoResolve:
    """Resolves the alerts of detections with ``auto_resolve`` that had no new hit for that long."""

    def __init__(self, store: PipelineStore, quiet_after: Callable[[], Mapping[str, float]]) -> None:
        self.store = store
        self.quiet_after = quiet_after

    def __call__(self, now: float) -> int:
        quiet_after = self.quiet_after()
        if not quiet_after:
            return 0
        resolved = 0
        with self.store.pipeline() as batch:
            for rule_id, quiet in quiet_after.items():
                for alert_id, status in batch.quiet_alerts(rule_id, now - quiet):
                    to = transition(Action.RESOLVE, status)
                    reason = f"no new hit for {quiet:.0f} s"
                    if to is not None and batch.set_status(
                        alert_id, status, to, PipelineAction.AUTO_RESOLVE, reason, now
                    ):
                        batch.announce(alert_id, AlertChange.RESOLVED, now)
                        resolved += 1
        return resolved


class Retention:
    """Forgets sent notifications after :data:`SENT_RETENTION_S` and ended silences after
    :data:`~ringfence.alerts.silences.SILENCE_KEPT_S`, a slice of :data:`RETENTION_SLICE` a
    transaction (the store's writer is shared with the processor's commits), up to
    :data:`RETENTION_SLICES` slices of each a call."""

    def __init__(self, store: PipelineStore) -> None:
        self.store = store

    def __call__(self, now: float) -> int:
        return self._forget(lambda b: b.forget_sent(now - SENT_RETENTION_S, RETENTION_SLICE)) + self._forget(
            lambda b: b.forget_silences(now - SILENCE_KEPT_S, RETENTION_SLICE)
        )

    def _forget(self, slice_of: Callable[[PipelineBatch], int]) -> int:
        forgotten = 0
        for _ in range(RETENTION_SLICES):
            with self.store.pipeline() as batch:
                deleted = slice_of(batch)
            forgotten += deleted
            if deleted < RETENTION_SLICE:
                break
        return forgotten


class Every:
    """Runs ``stage`` at most once every ``period_s`` (the first time at once)."""

    def __init__(self, period_s: float, stage: Stage) -> None:
        self.period_s = period_s
        self.stage = stage
        self._last = -math.inf

    def __call__(self, now: float) -> int:
        if now - self._last < self.period_s:
            return 0
        self._last = now
        return self.stage(now)
