"""The alert pipeline's state in SQL (SQLite and PostgreSQL): the outbox of alert changes and
the dispatcher's place in it, alert statuses and history as the pipeline changes them,
groups, and the notification log's queue. One :class:`SqlPipeline` is one transaction of
the :class:`~ringfence.alerts.dispatcher.Dispatcher`; it decides nothing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ringfence.alerts.config import InhibitRule
from ringfence.alerts.delivery import NextStep
from ringfence.alerts.grouping import NEVER, GroupState
from ringfence.alerts.lifecycle import ACTIVE, FIRING, SYSTEM_ACTOR
from ringfence.alerts.model import AlertChange, AlertSummary, Notification, NotificationStatus
from ringfence.alerts.muting import label_set
from ringfence.alerts.ports import OutboxEntry, PipelineBatch
from ringfence.alerts.silences import Silence
from ringfence.clock import iso
from ringfence.store.connection import Connection
from ringfence.store.notifications import COLUMNS, notification
from ringfence.store.silences import current_silences, forget_silences

CURSOR = "dispatcher"  # the outbox's one reader
INHIBITION_SOURCES = 500  # the newest firing alerts an inhibition rule is checked against
_SUMMARY_COLUMNS = (
    "id, rule_id, severity, audience, status, customer_id, labels, title, summary, first_seen, last_seen, count"
)
_COLUMN_LABELS = ("rule_id", "severity", "audience")  # labels an alert has as columns (and customer_id)
_group_encoder = msgspec.json.Encoder()
_group_decoder = msgspec.json.Decoder(GroupState)


def announce(conn: Connection, alert_id: str, change: AlertChange, now: float) -> None:
    """Put a change of an alert in the outbox, in the transaction that makes the change."""
    conn.execute("INSERT INTO alert_events (alert_id, kind, at) VALUES (?, ?, ?)", (alert_id, change, now))


def add_history(
    conn: Connection,
    alert_id: str,
    at: float,
    actor: str,
    action: str,
    reason: str,
    from_status: str | None = None,
    to_status: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO alert_history VALUES (?, ?, ?, ?, ?, ?, ?)",
        (alert_id, at, actor, action, reason, from_status, to_status),
    )


def _summary(row: tuple[Any, ...]) -> AlertSummary:
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


class SqlPipeline(PipelineBatch):
    """The pipeline's tables on ``conn``, inside the caller's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- the outbox -----------------------------------------------------------------------

    def changes(self, limit: int) -> list[OutboxEntry]:
        row = self.conn.execute("SELECT seq FROM dispatcher_cursor WHERE name = ?", (CURSOR,)).fetchone()
        rows = self.conn.execute(
            "SELECT seq, alert_id, kind FROM alert_events WHERE seq > ? ORDER BY seq LIMIT ?",
            (int(row[0]) if row else 0, limit),
        )
        return [OutboxEntry(seq, alert_id, AlertChange(kind)) for seq, alert_id, kind in rows]

    def consumed(self, through_seq: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO dispatcher_cursor VALUES (?, ?)", (CURSOR, through_seq))
        self.conn.execute("DELETE FROM alert_events WHERE seq <= ?", (through_seq,))  # the outbox stays small

    def announce(self, alert_id: str, change: AlertChange, now: float) -> None:
        announce(self.conn, alert_id, change, now)

    # -- alerts ------------------------------------------------------------------------------

    def alert(self, alert_id: str) -> AlertSummary | None:
        row = self.conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM alerts WHERE id = ?",  # nosec # noqa: S608 - constant columns
            (alert_id,),
        ).fetchone()
        return _summary(row) if row else None

    def set_status(self, alert_id: str, from_status: str, to_status: str, action: str, reason: str, now: float) -> bool:
        cur = self.conn.execute(
            "UPDATE alerts SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
            (to_status, now, alert_id, from_status),
        )
        if cur.rowcount != 1:
            return False
        add_history(self.conn, alert_id, now, SYSTEM_ACTOR, action, reason, from_status, to_status)
        return True

    def note(self, alert_ids: Sequence[str], action: str, reason: str, now: float) -> None:
        self.conn.executemany(
            "INSERT INTO alert_history VALUES (?, ?, ?, ?, ?, NULL, NULL)",
            [(alert_id, now, SYSTEM_ACTOR, action, reason) for alert_id in alert_ids],
        )

    def current_silences(self, now: float) -> list[Silence]:
        return current_silences(self.conn, now)

    def inhibition_sources(self, rule: InhibitRule, labels: Mapping[str, str]) -> Iterable[Mapping[str, str]]:
        """The newest firing alerts but ``labels``' own, narrowed to those that agree with it on
        the ``equal`` labels kept as columns (the rest :func:`~ringfence.alerts.muting.inhibited_by` checks)."""
        where = [f"status IN ({', '.join('?' * len(FIRING))})", "id != ?"]
        args: list[Any] = [*FIRING, labels.get("alert_id", "")]
        for name in rule.equal:
            value = labels.get(name, "")
            if name == "customer_id":
                where.append("customer_id = ?" if value else "(customer_id IS NULL OR customer_id = ?)")
                args.append(value)
            elif name in _COLUMN_LABELS:
                where.append(f"{name} = ?")
                args.append(value)
        sql = (
            f"SELECT {_SUMMARY_COLUMNS} FROM alerts WHERE {' AND '.join(where)} "  # nosec # noqa: S608
            "ORDER BY seq DESC LIMIT ?"  # constant columns and clauses; values are bound
        )
        return [label_set(_summary(row)) for row in self.conn.execute(sql, [*args, INHIBITION_SOURCES])]

    def quiet_alerts(self, rule_id: str, since: float) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            f"SELECT id, status FROM alerts WHERE rule_id = ? AND status IN ({', '.join('?' * len(ACTIVE))}) "  # nosec # noqa: S608
            "AND updated_at < ?",  # placeholders only
            (rule_id, *ACTIVE, since),
        )
        return [(alert_id, status) for alert_id, status in rows]

    # -- groups ------------------------------------------------------------------------------

    def group(self, key: str) -> GroupState | None:
        row = self.conn.execute("SELECT state FROM alert_groups WHERE group_key = ?", (key,)).fetchone()
        return _group_decoder.decode(row[0]) if row else None

    def save_group(self, group: GroupState) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO alert_groups VALUES (?, ?, ?)",
            (group.key, _group_encoder.encode(group), min(group.next_flush_at, NEVER)),
        )

    def drop_group(self, key: str) -> None:
        self.conn.execute("DELETE FROM alert_groups WHERE group_key = ?", (key,))

    def groups_with(self, alert_id: str) -> list[GroupState]:
        rows = self.conn.execute("SELECT state FROM alert_groups WHERE instr(state, ?) > 0", (f'"{alert_id}"',))
        return [g for g in (_group_decoder.decode(row[0]) for row in rows) if alert_id in g.alert_ids]

    def in_group(self, key: str, alert_id: str) -> bool:
        # a part's key is the group's, a dot and its number (by prefix: a range of keys would
        # follow the database's collation, which may order punctuation as it likes)
        row = self.conn.execute(
            "SELECT 1 FROM alert_groups WHERE (group_key = ? OR substr(group_key, 1, ?) = ?) "
            "AND instr(state, ?) > 0 LIMIT 1",
            (key, len(key) + 1, key + ".", f'"{alert_id}"'),
        ).fetchone()
        return row is not None

    def due_groups(self, now: float, limit: int) -> list[GroupState]:
        rows = self.conn.execute("SELECT state FROM alert_groups WHERE next_flush_at <= ? LIMIT ?", (now, limit))
        return [_group_decoder.decode(row[0]) for row in rows]

    # -- the notification log ----------------------------------------------------------------

    def add_notification(
        self, notification_id: str, group_key: str, receiver: str, payload: dict[str, Any], now: float
    ) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO notifications (id, group_key, receiver, status, payload, attempts, "
            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            (notification_id, group_key, receiver, NotificationStatus.PENDING, msgspec.json.encode(payload), now, now),
        )

    def claim(self, notification_id: str, now: float, lease_s: float) -> bool:
        cur = self.conn.execute(
            "UPDATE notifications SET next_attempt_at = ? WHERE id = ? AND status = ? AND next_attempt_at <= ?",
            (now + lease_s, notification_id, NotificationStatus.PENDING, now),
        )
        return bool(cur.rowcount == 1)

    def supersede(self, notification_id: str, by: str, now: float) -> Notification | None:
        row = self.conn.execute(
            f"SELECT {COLUMNS} FROM notifications WHERE id = ? AND status = ?",  # nosec # noqa: S608
            (notification_id, NotificationStatus.PENDING),
        ).fetchone()
        if row is None:
            return None
        # next_attempt_at: when it was superseded, which retention goes by (it is never due again)
        self.conn.execute(
            "UPDATE notifications SET status = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
            (NotificationStatus.SUPERSEDED, now, f"superseded by {by}", notification_id),
        )
        return notification(row)

    def record_attempt(self, notification_id: str, step: NextStep, now: float) -> bool:
        sent = step.status is NotificationStatus.SENT
        cur = self.conn.execute(
            "UPDATE notifications SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ?, "
            "sent_at = coalesce(?, sent_at) WHERE id = ? AND (status <> ? OR ?)",
            (
                step.status,
                step.attempts,
                step.next_attempt_at,
                step.detail,
                now if sent else None,
                notification_id,
                NotificationStatus.SUPERSEDED,
                sent,
            ),
        )
        return bool(cur.rowcount == 1)

    def forget_sent(self, before: float, limit: int) -> int:
        # a slice at a time, found by the (status, sent_at) and (status, next_attempt_at)
        # indexes: the writer is held briefly
        cur = self.conn.execute(
            "DELETE FROM notifications WHERE id IN "
            "(SELECT id FROM notifications WHERE status = ? AND sent_at < ? LIMIT ?)",
            (NotificationStatus.SENT, before, limit),
        )
        forgotten = int(cur.rowcount)
        if forgotten < limit:
            cur = self.conn.execute(
                "DELETE FROM notifications WHERE id IN "
                "(SELECT id FROM notifications WHERE status = ? AND next_attempt_at < ? LIMIT ?)",
                (NotificationStatus.SUPERSEDED, before, limit - forgotten),
            )
            forgotten += int(cur.rowcount)
        return forgotten

    def forget_silences(self, ended_before: float, limit: int) -> int:
        return forget_silences(self.conn, ended_before, limit)
