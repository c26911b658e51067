"""The notification log in SQL (SQLite and PostgreSQL): the
:class:`~ringfence.alerts.ports.NotificationLog` of the embedded and kafka runtimes, as
people see it (list, count, re-drive dead letters). The dispatcher's side of it (add, claim,
record attempts) is in :mod:`ringfence.store.pipeline`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ringfence.alerts.model import Notification, NotificationStatus
from ringfence.alerts.ports import NotificationLog
from ringfence.errors import NotFound
from ringfence.store import paging
from ringfence.store.connection import Connection

if TYPE_CHECKING:
    from ringfence.store.sql import SqlStore

COLUMNS = "id, group_key, receiver, status, payload, attempts, next_attempt_at, created_at, sent_at, last_error"


def notification(row: tuple[Any, ...]) -> Notification:
    """A row of :data:`COLUMNS` as a Notification."""
    return Notification(row[0], row[1], row[2], NotificationStatus(row[3]), msgspec.json.decode(row[4]), *row[5:])


def due(conn: Connection, now: float, limit: int, receivers: Sequence[str] = (), each: int = 0) -> list[Notification]:
    """Pending notifications due at ``now``, the longest due first (``limit`` of them), and,
    besides, each of ``receivers``' ``each`` longest due, found on the receiver's index: so no
    receiver's backlog hides another's."""
    query = (
        f"SELECT {COLUMNS} FROM notifications WHERE status = ? AND next_attempt_at <= ? "  # nosec # noqa: S608
        "ORDER BY next_attempt_at LIMIT ?"
    )
    found = {n.id: n for n in map(notification, conn.execute(query, (NotificationStatus.PENDING, now, limit)))}
    if len(found) < limit:  # every due one already: no receiver's can be hidden
        return list(found.values())
    by_receiver = (
        f"SELECT {COLUMNS} FROM notifications WHERE status = ? AND receiver = ? "  # nosec # noqa: S608
        "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?"
    )
    for receiver in receivers:
        for row in conn.execute(by_receiver, (NotificationStatus.PENDING, receiver, now, each)):
            found.setdefault(row[0], notification(row))
    return sorted(found.values(), key=lambda n: n.next_attempt_at)


class SqlNotificationLog(NotificationLog):
    """Pages by the log's insertion order (``rowid``; ``seq`` in PostgreSQL), which is unique:
    many notifications made by one flush share their ``created_at``."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def notifications(
        self, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Notification], str | None]:
        where: list[str] = []
        args: list[Any] = []
        below = paging.after(cursor)
        if below is not None:
            where.append("rowid < ?")
            args.append(below)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = f"SELECT rowid, {COLUMNS} FROM notifications"  # nosec # noqa: S608 - constant columns
        if where:
            sql += " WHERE " + " AND ".join(where)  # clauses are constants, values are bound
        rows, next_cursor = paging.page(
            self.store.conn().execute(sql + " ORDER BY rowid DESC LIMIT ?", [*args, limit + 1]).fetchall(), limit
        )
        return [notification(row[1:]) for row in rows], next_cursor

    def count_by_status(self) -> dict[str, int]:
        """Notifications per status (pending, sent, dead, superseded)."""
        rows = self.store.conn().execute("SELECT status, count(*) FROM notifications GROUP BY status")
        return {status: int(n) for status, n in rows}

    def notification(self, notification_id: str) -> Notification | None:
        row = (
            self.store.conn()
            .execute(
                f"SELECT {COLUMNS} FROM notifications WHERE id = ?",  # nosec # noqa: S608 - constant columns
                (notification_id,),
            )
            .fetchone()
        )
        return notification(row) if row else None

    def redrive(self, notification_id: str, actor: str, now: float) -> Notification:
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE notifications SET status = ?, attempts = 0, next_attempt_at = ?, last_error = '' "
                "WHERE id = ? AND status = ?",
                (NotificationStatus.PENDING, now, notification_id, NotificationStatus.DEAD),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no dead letter {notification_id!r}")
            self.store.audit(conn, now, actor, "notification.redrive", notification_id, {})
            row = conn.execute(
                f"SELECT {COLUMNS} FROM notifications WHERE id = ?",  # nosec # noqa: S608 - constant columns
                (notification_id,),
            ).fetchone()
        return notification(row)
