"""Silences in SQL (SQLite and PostgreSQL): the :class:`~ringfence.alerts.ports.SilenceStore`
of the embedded and kafka runtimes. What a silence may be is decided by
:func:`~ringfence.alerts.silences.check_silence`, for every runtime."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import msgspec

from ringfence.alerts.matchers import stored_matchers
from ringfence.alerts.ports import SilenceStore
from ringfence.alerts.silences import MAX_CURRENT_SILENCES, SILENCE_KEPT_S, Silence, TooManySilences, check_silence
from ringfence.clock import iso
from ringfence.errors import NotFound
from ringfence.store import audit as audit_chain
from ringfence.store import paging
from ringfence.store.connection import Connection

if TYPE_CHECKING:
    from ringfence.store.sql import SqlStore


_COLUMNS = "id, matchers, starts_at, ends_at, created_by, comment, created_at"


def _silence(row: tuple[Any, ...]) -> Silence:
    return Silence(row[0], stored_matchers(row[1]), *row[2:])


def current_silences(conn: Connection, now: float) -> list[Silence]:
    """The silences not expired at ``now``, newest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM silences WHERE ends_at > ? ORDER BY created_at DESC",  # nosec # noqa: S608 - constant columns
        (now,),
    )
    return [_silence(row) for row in rows]


def forget_silences(conn: Connection, ended_before: float, limit: int) -> int:
    """Delete up to ``limit`` silences that ended before ``ended_before``; how many."""
    cur = conn.execute(
        "DELETE FROM silences WHERE id IN (SELECT id FROM silences WHERE ends_at < ? LIMIT ?)", (ended_before, limit)
    )
    return int(cur.rowcount)


class SqlSilenceStore(SilenceStore):
    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def create_silence(
        self, matchers: list[str], starts_at: float, ends_at: float, actor: str, comment: str, now: float
    ) -> Silence:
        parsed = check_silence(matchers, starts_at, ends_at, comment, now)
        silence = Silence(f"sil_{secrets.token_hex(8)}", parsed, starts_at, ends_at, actor, comment, now)
        with self.store.transaction() as conn:
            # counted again where it is added: two requests at 999 must not both add one
            current = conn.execute("SELECT count(*) FROM silences WHERE ends_at > ?", (now,)).fetchone()[0]
            if current >= MAX_CURRENT_SILENCES:
                raise TooManySilences()
            conn.execute(
                f"INSERT INTO silences ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # nosec # noqa: S608 - constant columns
                (silence.id, msgspec.json.encode(matchers).decode(), starts_at, ends_at, actor, comment, now),
            )
            detail = {"matchers": matchers, "ends_at": iso(ends_at), "comment": comment}
            self.store.audit(conn, now, actor, "silence.create", silence.id, detail)
        return silence

    def silences(self, limit: int, cursor: str | None, now: float) -> tuple[list[Silence], str | None]:
        """Pages by insertion order (``rowid``; ``seq`` in PostgreSQL), which is unique;
        retention deletes the ended ones a little after they stop being listed."""
        below = paging.after(cursor)
        sql = f"SELECT rowid, {_COLUMNS} FROM silences WHERE ends_at > ?"  # nosec # noqa: S608 - constant columns
        args: list[Any] = [now - SILENCE_KEPT_S]
        if below is not None:
            sql += " AND rowid < ?"
            args.append(below)
        rows = self.store.conn().execute(sql + " ORDER BY rowid DESC LIMIT ?", [*args, limit + 1]).fetchall()
        page, next_cursor = paging.page(rows, limit)
        return [_silence(row[1:]) for row in page], next_cursor

    def current_count(self, now: float) -> int:
        row = self.store.conn().execute("SELECT count(*) FROM silences WHERE ends_at > ?", (now,)).fetchone()
        return int(row[0])

    def expire_silence(self, silence_id: str, actor: str, now: float) -> Silence:
        with self.store.transaction() as conn:
            # current in the trail's order: a second request that read the clock first finds it ended
            at = audit_chain.change_time(conn, now)
            cur = conn.execute("UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?", (now, silence_id, at))
            if cur.rowcount == 0:
                raise NotFound(f"no active or pending silence {silence_id!r}")
            conn.execute("UPDATE silences SET starts_at = min(starts_at, ?) WHERE id = ?", (now, silence_id))
            self.store.audit(conn, now, actor, "silence.expire", silence_id, {})
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM silences WHERE id = ?",  # nosec # noqa: S608 - constant columns
                (silence_id,),
            ).fetchone()
        return _silence(row)
