"""The alert pipeline: alert changes -> mute (silences, inhibition) -> route -> group ->
notification log -> delivery with retries, dead letters and resolve notifications.

It reads the outbox the processor commits with each alert (``alert_events``) and keeps
every decision and its cursor in the store, so a restart neither re-sends nor forgets.
Runs as a thread of the embedded runtime; :meth:`Dispatcher.step` is one pass, for tests.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from ringfence.alerts.config import AlertingConfig, Route
from ringfence.alerts.grouping import after_flush, group_key, new_group, on_change, should_send
from ringfence.alerts.matchers import all_match
from ringfence.alerts.model import ACTIVE_STATUSES
from ringfence.alerts.notify import Notifier, Outcome, notifiers_of
from ringfence.alerts.silences import Silence
from ringfence.alerts.stream import AlertStream
from ringfence.clock import Clock, iso
from ringfence.metrics import Metrics
from ringfence.store.connection import Connection
from ringfence.store.notifications import NotificationStore
from ringfence.store.sql import SYSTEM_ACTOR, SqlStore

CLAIM_LEASE_S = 120.0  # longer than one send with its timeout
log = logging.getLogger("ringfence.dispatcher")

BATCH = 500
AUTO_RESOLVE_EVERY_S = 10.0
SENT_RETENTION_S = 30 * 86400.0  # sent notifications are kept this long; dead letters until re-driven
_ALERT_COLUMNS = (
    "id, rule_id, severity, audience, status, customer_id, labels, title, summary, first_seen, last_seen, count"
)


def _alert_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "rule_id": row[1],
        "severity": row[2],
        "audience": row[3],
        "status": row[4],
        "customer_id": row[5],
        "labels": msgspec.json.decode(row[6]),
        "title": row[7],
        "summary": row[8],
        "first_seen": iso(row[9]),
        "last_seen": iso(row[10]),
        "count": row[11],
    }


def label_set(alert: dict[str, Any]) -> dict[str, str]:
    """What matchers see: the alert's labels and its main fields."""
    return {
        **alert["labels"],
        "rule_id": alert["rule_id"],
        "severity": alert["severity"],
        "audience": alert["audience"],
        "customer_id": alert["customer_id"] or "",
        "alert_id": alert["id"],
    }


def _flatten(route: Route) -> dict[str, Route]:
    out = {route.id: route}
    for child in route.routes:
        out.update(_flatten(child))
    return out


class Dispatcher:
    """Moves alert changes through the pipeline; one instance per store."""

    def __init__(
        self,
        store: SqlStore,
        config: AlertingConfig,
        clock: Clock,
        metrics: Metrics,
        stream: AlertStream | None = None,
        auto_resolve: Callable[[], dict[str, float]] = dict,
        client: httpx.Client | None = None,
    ) -> None:
        self.store = store
        self.notes = NotificationStore(store)
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.stream = stream
        self.auto_resolve_after = auto_resolve
        self.routes = _flatten(config.route)
        self._client = client or httpx.Client(follow_redirects=False)
        self.notifiers: dict[str, Notifier] = notifiers_of(config, self._client)
        self.wakeup = threading.Event()
        self._last_auto_resolve = 0.0
        self._rng = random.Random()  # nosec B311 # noqa: S311 - jitter, not security

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event, idle_wait_s: float = 0.2) -> None:
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception:
                log.exception("dispatcher step failed; retrying")
                stop.wait(1.0)
                continue
            if not busy:
                self.wakeup.wait(idle_wait_s)
                self.wakeup.clear()

    def step(self) -> int:
        """One pass: take alert changes, flush due groups, deliver due notifications."""
        now = self.clock.time()
        done = self.consume(now)
        done += self.flush(now)
        done += self.deliver(now)
        if now - self._last_auto_resolve >= AUTO_RESOLVE_EVERY_S:
            self._last_auto_resolve = now
            done += self.auto_resolve(now)
            with self.store.transaction() as conn:
                conn.execute(
                    "DELETE FROM notifications WHERE status = 'sent' AND sent_at < ?", (now - SENT_RETENTION_S,)
                )
        return done

    # -- alert changes --------------------------------------------------------------------------

    def consume(self, now: float) -> int:
        published: list[dict[str, Any]] = []
        with self.store.transaction() as conn:
            cursor = self.notes.cursor(conn)
            events = self.notes.alert_events(conn, cursor, BATCH)
            if not events:
                return 0
            silences = [s for s in self.notes.silences(conn, current_at=now) if s.active(now)]
            for _, alert_id, kind in events:
                alert = self._load(conn, alert_id)
                if alert is None:
                    continue
                if kind == "firing" and alert["status"] != "resolved":
                    alert = self._mute_and_route(conn, alert, silences, now)
                elif kind in ("resolved", "acknowledged"):
                    for group in self.notes.groups_with(conn, alert_id):
                        route = self.routes.get(group.route)
                        if route is not None:
                            on_change(group, route, now, urgent=kind == "resolved" and self.config.notify_resolved)
                            self.notes.save_group(conn, group)
                published.append({"change": kind, **alert})
            self.notes.set_cursor(conn, events[-1][0])
            conn.execute(
                "DELETE FROM alert_events WHERE seq <= ?", (events[-1][0],)
            )  # consumed: the outbox stays small
        if self.stream is not None:
            for event in published:
                self.stream.publish(event)
        return len(events)

    def _load(self, conn: Connection, alert_id: str) -> dict[str, Any] | None:
        row = conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)).fetchone()  # nosec # noqa: S608
        return _alert_dict(row) if row else None

    def _mute_and_route(
        self, conn: Connection, alert: dict[str, Any], silences: list[Silence], now: float
    ) -> dict[str, Any]:
        labels = label_set(alert)
        reason = self._mute_reason(conn, labels, silences)
        if reason is not None and alert["status"] == "open":
            self.store.set_status(conn, alert["id"], "suppressed", SYSTEM_ACTOR, "suppress", reason, now)
            alert = {**alert, "status": "suppressed"}
        elif reason is None and alert["status"] == "suppressed":
            self.store.set_status(
                conn, alert["id"], "open", SYSTEM_ACTOR, "unsuppress", "no silence or inhibition matches any more", now
            )
            alert = {**alert, "status": "open"}
        if reason is not None:
            return alert
        for route in self.config.route.match(labels):
            if route.receiver not in self.notifiers:
                continue  # the dashboard: the live stream and the API are enough
            key, group_labels = group_key(route, labels)
            group = self.notes.group(conn, key) or new_group(route, key, group_labels, now)
            if alert["id"] not in group.alert_ids:
                group.alert_ids.append(alert["id"])
                on_change(group, route, now)
                self.notes.save_group(conn, group)
                conn.execute(
                    "INSERT INTO alert_history VALUES (?, ?, ?, 'route', ?, NULL, NULL)",
                    (alert["id"], now, SYSTEM_ACTOR, f"routed by {route.id} to {route.receiver}"),
                )
        return alert

    def _mute_reason(self, conn: Connection, labels: dict[str, str], silences: list[Silence]) -> str | None:
        for silence in silences:
            if all_match(silence.matchers, labels):
                return f"silenced by {silence.id}"
        for rule in self.config.inhibit_rules:
            if not all_match(rule.target, labels):
                continue
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status IN ('open', 'acknowledged') "  # nosec # noqa: S608
                "AND id != ? AND (? = '' OR customer_id = ?) ORDER BY seq DESC LIMIT 500",
                (
                    labels["alert_id"],
                    labels["customer_id"] if "customer_id" in rule.equal else "",
                    labels["customer_id"],
                ),
            )
            for row in rows:
                source = label_set(_alert_dict(row))
                if all_match(rule.source, source) and all(source.get(k, "") == labels.get(k, "") for k in rule.equal):
                    return f"inhibited by {source['alert_id']}"
        return None

    # -- groups ----------------------------------------------------------------------------------

    def flush(self, now: float) -> int:
        sent = 0
        with self.store.transaction() as conn:
            for group in self.notes.due_groups(conn, now):
                route = self.routes.get(group.route)
                if route is None:  # the config changed: the route is gone
                    self.notes.drop_group(conn, group.key)
                    continue
                alerts = [a for a in (self._load(conn, i) for i in group.alert_ids) if a is not None]
                firing = [a for a in alerts if a["status"] in ("open", "acknowledged")]
                resolved = [a for a in alerts if a["status"] == "resolved"]
                shown = firing + (resolved if self.config.notify_resolved else [])
                digest = hashlib.sha256(repr(sorted((a["id"], a["status"]) for a in shown)).encode()).hexdigest()
                send = bool(shown) and should_send(group, digest, route, now)
                if send:
                    notification_id = (
                        "n_" + hashlib.sha256(f"{group.key}|{group.flushes + 1}".encode()).hexdigest()[:24]
                    )
                    payload = {
                        "version": "1",
                        "notification_id": notification_id,
                        "receiver": group.receiver,
                        "status": "firing" if firing else "resolved",
                        "group_key": group.key,
                        "group_labels": group.labels,
                        "alerts": shown,
                    }
                    self.notes.add_notification(conn, notification_id, group.key, group.receiver, payload, now)
                    sent += 1
                after_flush(group, route, now, sent=send, firing=bool(firing), digest=digest)
                group.alert_ids = [a["id"] for a in firing]
                if group.alert_ids:
                    self.notes.save_group(conn, group)
                else:
                    self.notes.drop_group(conn, group.key)
        return sent

    # -- delivery ------------------------------------------------------------------------------

    def deliver(self, now: float) -> int:
        due = self.notes.due_notifications(now)
        policy = self.config.retry
        for n in due:
            if not self.notes.claim(n.id, now, CLAIM_LEASE_S):
                continue  # another dispatcher (kafka runtime: several run) has it
            notifier = self.notifiers.get(n.receiver)
            if notifier is None:
                self.notes.record_attempt(n.id, "dead", n.attempts, now, "receiver is no longer configured", now)
                continue
            result = notifier.send(n.payload, n.id, self.clock.time())
            attempts = n.attempts + 1
            self.metrics.notifications.labels(n.receiver, result.outcome.value).inc()
            if result.outcome is Outcome.SENT:
                self.notes.record_attempt(n.id, "sent", attempts, now, "", self.clock.time())
                self._history(n.payload, f"notified via {n.receiver} ({n.id})")
            elif result.outcome is Outcome.RETRY and attempts < policy.max_attempts:
                delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempts - 1))
                delay = delay * self._rng.uniform(0.5, 1.0)  # jitter, so retries do not stampede
                if result.retry_after is not None:
                    delay = max(delay, min(result.retry_after, policy.max_delay_s))
                self.notes.record_attempt(n.id, "pending", attempts, now + delay, result.detail, now)
            else:
                self.notes.record_attempt(n.id, "dead", attempts, now, result.detail, now)
                self._history(n.payload, f"notification {n.id} to {n.receiver} failed for good: {result.detail}")
                log.warning("notification %s to %s is a dead letter: %s", n.id, n.receiver, result.detail)
        return len(due)

    def _history(self, payload: dict[str, Any], reason: str) -> None:
        now = self.clock.time()
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT INTO alert_history VALUES (?, ?, ?, 'notify', ?, NULL, NULL)",
                [(a["id"], now, SYSTEM_ACTOR, reason) for a in payload["alerts"]],
            )

    # -- lifecycle -------------------------------------------------------------------------------

    def auto_resolve(self, now: float) -> int:
        """Resolve alerts of detections with ``auto_resolve`` that had no new hit for that long."""
        resolved = 0
        quiet_after = self.auto_resolve_after()
        if not quiet_after:
            return 0
        with self.store.transaction() as conn:
            for rule_id, quiet in quiet_after.items():
                rows = conn.execute(
                    "SELECT id FROM alerts WHERE rule_id = ? AND status IN (?, ?, ?) AND updated_at < ?",
                    (rule_id, *ACTIVE_STATUSES, now - quiet),
                ).fetchall()
                for (alert_id,) in rows:
                    self.store.set_status(
                        conn, alert_id, "resolved", SYSTEM_ACTOR, "auto-resolve", f"no new hit for {quiet:.0f} s", now
                    )
                    self.notes.add_alert_event(conn, alert_id, "resolved", now)
                    resolved += 1
        return resolved

    def close(self) -> None:
        self._client.close()
