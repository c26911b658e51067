"""The alert pipeline's persistent state: the outbox of alert changes, silences, groups and
the notification log (with dead letters). A restart neither re-sends nor forgets."""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from ringfence.alerts.grouping import GroupState
from ringfence.alerts.matchers import parse_matchers, parse_stored_matchers
from ringfence.alerts.model import Notification
from ringfence.alerts.silences import Silence
from ringfence.clock import iso
from ringfence.errors import NotFound, StoreError
from ringfence.store.connection import Connection
from ringfence.store.sql import SqlStore

_group_encoder = msgspec.json.Encoder()
_group_decoder = msgspec.json.Decoder(GroupState)


_NOTIFICATION_COLUMNS = (
    "id, group_key, receiver, status, payload, attempts, next_attempt_at, created_at, sent_at, last_error"
)


def _notification(row: tuple[Any, ...]) -> Notification:
    return Notification(row[0], row[1], row[2], row[3], msgspec.json.decode(row[4]), *row[5:])


class NotificationStore:
    """Repository of the pipeline's tables, over the store's SQLite file."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    # -- outbox ----------------------------------------------------------------------------

    def cursor(self, conn: Connection, name: str = "dispatcher") -> int:
        row = conn.execute("SELECT seq FROM dispatcher_cursor WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, conn: Connection, seq: int, name: str = "dispatcher") -> None:
        conn.execute("INSERT OR REPLACE INTO dispatcher_cursor VALUES (?, ?)", (name, seq))

    def alert_events(self, conn: Connection, after: int, limit: int) -> list[tuple[int, str, str]]:
        return list(
            conn.execute(
                "SELECT seq, alert_id, kind FROM alert_events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            )
        )

    def add_alert_event(self, conn: Connection, alert_id: str, kind: str, now: float) -> None:
        conn.execute("INSERT INTO alert_events (alert_id, kind, at) VALUES (?, ?, ?)", (alert_id, kind, now))

    # -- silences ----------------------------------------------------------------------------

    def create_silence(
        self, matchers: list[str], starts_at: float, ends_at: float, actor: str, comment: str, now: float
    ) -> Silence:
        parsed = parse_matchers(matchers)
        if not parsed:
            raise StoreError("a silence needs at least one matcher")
        if ends_at <= starts_at:
            raise StoreError("a silence must end after it starts")
        silence = Silence(f"sil_{secrets.token_hex(8)}", parsed, starts_at, ends_at, actor, comment, now)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?)",
                (silence.id, msgspec.json.encode(matchers).decode(), starts_at, ends_at, actor, comment, now),
            )
            self.store.audit(
                conn,
                now,
                actor,
                "silence.create",
                silence.id,
                {"matchers": matchers, "ends_at": iso(ends_at), "comment": comment},
            )
        return silence

    def expire_silence(self, silence_id: str, actor: str, now: float) -> Silence:
        with self.store.transaction() as conn:
            cur = conn.execute("UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?", (now, silence_id, now))
            if cur.rowcount == 0:
                raise NotFound(f"no active or pending silence {silence_id!r}")
            conn.execute("UPDATE silences SET starts_at = min(starts_at, ?) WHERE id = ?", (now, silence_id))
            self.store.audit(conn, now, actor, "silence.expire", silence_id, {})
        return self.silence(silence_id)

    def silence(self, silence_id: str) -> Silence:
        row = self.store.conn().execute("SELECT * FROM silences WHERE id = ?", (silence_id,)).fetchone()
        if row is None:
            raise NotFound(f"no silence {silence_id!r}")
        return self._silence(row)

    @staticmethod
    def _silence(row: tuple[Any, ...]) -> Silence:
        return Silence(row[0], parse_stored_matchers(msgspec.json.decode(row[1])), *row[2:])

    def silences(self, conn: Connection | None = None, *, current_at: float | None = None) -> list[Silence]:
        """Every silence, or with ``current_at`` those not yet expired then."""
        conn = conn or self.store.conn()
        if current_at is None:
            rows = conn.execute("SELECT * FROM silences ORDER BY created_at DESC")
        else:
            rows = conn.execute("SELECT * FROM silences WHERE ends_at > ? ORDER BY created_at DESC", (current_at,))
        return [self._silence(row) for row in rows]

    # -- groups ------------------------------------------------------------------------------

    def group(self, conn: Connection, key: str) -> GroupState | None:
        row = conn.execute("SELECT state FROM alert_groups WHERE group_key = ?", (key,)).fetchone()
        return _group_decoder.decode(row[0]) if row else None

    def save_group(self, conn: Connection, group: GroupState) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO alert_groups VALUES (?, ?, ?)",
            (group.key, _group_encoder.encode(group), min(group.next_flush_at, 1e18)),
        )

    def drop_group(self, conn: Connection, key: str) -> None:
        conn.execute("DELETE FROM alert_groups WHERE group_key = ?", (key,))

    def due_groups(self, conn: Connection, now: float, limit: int = 100) -> list[GroupState]:
        rows = conn.execute("SELECT state FROM alert_groups WHERE next_flush_at <= ? LIMIT ?", (now, limit))
        return [_group_decoder.decode(row[0]) for row in rows]

    def groups_with(self, conn: Connection, alert_id: str) -> list[GroupState]:
        rows = conn.execute("SELECT state FROM alert_groups WHERE instr(state, ?) > 0", (f'"{alert_id}"',))
        return [g for g in (_group_decoder.decode(row[0]) for row in rows) if alert_id in g.alert_ids]

    # -- notification log --------------------------------------------------------------------

    def add_notification(
        self,
        conn: Connection,
        notification_id: str,
        group_key: str,
        receiver: str,
        payload: dict[str, Any],
        now: float,
    ) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO notifications (id, group_key, receiver, status, payload, attempts, next_attempt_at, "
            "created_at) VALUES (?, ?, ?, 'pending', ?, 0, ?, ?)",
            (notification_id, group_key, receiver, msgspec.json.encode(payload), now, now),
        )

    def due_notifications(self, now: float, limit: int = 50) -> list[Notification]:
        rows = self.store.conn().execute(
            f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications "  # nosec # noqa: S608 - constant columns
            "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
        )
        return [_notification(row) for row in rows]

    def claim(self, notification_id: str, now: float, lease_s: float) -> bool:
        """Take a due notification for ``lease_s`` (another dispatcher skips it meanwhile); True
        if this caller has it. A dispatcher that dies holding it lets it come due again."""
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE notifications SET next_attempt_at = ? "
                "WHERE id = ? AND status = 'pending' AND next_attempt_at <= ?",
                (now + lease_s, notification_id, now),
            )
        return bool(cur.rowcount == 1)

    def record_attempt(
        self, notification_id: str, status: str, attempts: int, next_attempt_at: float, error: str, now: float
    ) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE notifications SET status=?, attempts=?, next_attempt_at=?, last_error=?, "
                "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id=?",
                (status, attempts, next_attempt_at, error, status, now, notification_id),
            )

    def notifications(self, status: str | None, limit: int, cursor: float | None) -> list[Notification]:
        sql = f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE created_at < ?"  # nosec # noqa: S608
        args: list[Any] = [cursor if cursor is not None else 1e18]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY created_at DESC LIMIT ?"
        return [_notification(row) for row in self.store.conn().execute(sql, [*args, limit])]

    def count_by_status(self) -> dict[str, int]:
        """Notifications per status (pending, sent, dead)."""
        rows = self.store.conn().execute("SELECT status, count(*) FROM notifications GROUP BY status")
        return {status: int(n) for status, n in rows}

    def redrive(self, notification_id: str, actor: str, now: float) -> Notification:
        """Send a dead letter again: back to pending, attempts reset (audited)."""
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE notifications SET status='pending', attempts=0, next_attempt_at=?, last_error='' "
                "WHERE id=? AND status='dead'",
                (now, notification_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no dead letter {notification_id!r}")
            self.store.audit(conn, now, actor, "notification.redrive", notification_id, {})
        row = (
            self.store.conn()
            .execute(
                f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?",  # nosec # noqa: S608 - constant columns
                (notification_id,),
            )
            .fetchone()
        )
        return _notification(row)
