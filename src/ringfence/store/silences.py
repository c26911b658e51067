"""Silences in SQL (SQLite and PostgreSQL): the :class:`~ringfence.alerts.ports.SilenceStore`
of the embedded and kafka runtimes. What a silence may be is decided by
:func:`~ringfence.alerts.silences.check_silence`, for every runtime."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import msgspec

from ringfence.alerts.matchers import parse_stored_matchers
from ringfence.alerts.ports import SilenceStore
from ringfence.alerts.silences import Silence, check_silence
from ringfence.clock import iso
from ringfence.errors import NotFound
from ringfence.store.connection import Connection

if TYPE_CHECKING:
    from ringfence.store.sql import SqlStore


def _silence(row: tuple[Any, ...]) -> Silence:
    return Silence(row[0], parse_stored_matchers(msgspec.json.decode(row[1])), *row[2:])


def read_silences(conn: Connection, current_at: float | None = None) -> list[Silence]:
    """Every silence newest first, or with ``current_at`` those not expired then."""
    if current_at is None:
        rows = conn.execute("SELECT * FROM silences ORDER BY created_at DESC")
    else:
        rows = conn.execute("SELECT * FROM silences WHERE ends_at > ? ORDER BY created_at DESC", (current_at,))
    return [_silence(row) for row in rows]


class SqlSilenceStore(SilenceStore):
    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def create_silence(
        self, matchers: list[str], starts_at: float, ends_at: float, actor: str, comment: str, now: float
    ) -> Silence:
        parsed = check_silence(matchers, starts_at, ends_at, comment, now)
        silence = Silence(f"sil_{secrets.token_hex(8)}", parsed, starts_at, ends_at, actor, comment, now)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?)",
                (silence.id, msgspec.json.encode(matchers).decode(), starts_at, ends_at, actor, comment, now),
            )
            detail = {"matchers": matchers, "ends_at": iso(ends_at), "comment": comment}
            self.store.audit(conn, now, actor, "silence.create", silence.id, detail)
        return silence

    def silences(self, current_at: float | None = None) -> list[Silence]:
        return read_silences(self.store.conn(), current_at)

    def expire_silence(self, silence_id: str, actor: str, now: float) -> Silence:
        with self.store.transaction() as conn:
            cur = conn.execute("UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?", (now, silence_id, now))
            if cur.rowcount == 0:
                raise NotFound(f"no active or pending silence {silence_id!r}")
            conn.execute("UPDATE silences SET starts_at = min(starts_at, ?) WHERE id = ?", (now, silence_id))
            self.store.audit(conn, now, actor, "silence.expire", silence_id, {})
            row = conn.execute("SELECT * FROM silences WHERE id = ?", (silence_id,)).fetchone()
        return _silence(row)
