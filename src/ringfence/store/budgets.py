"""Budgets every API process shares, in the store (:class:`~ringfence.ratelimit.Buckets`):
a key's budget of what its changes may add to the store an hour is one budget however many
``serve api`` processes answer it, and a restart does not fill it.

A bucket is a row of ``budgets`` (its name, tokens, when), read and written in one write
transaction (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's write lock): two processes charging one
key at once are serialized, neither's charge lost. A refusal writes nothing and takes no lock:
it is read first outside the transaction (a stale read can only refuse what a give-back made
room for a moment before; a grant is always decided again inside). A bucket full again needs no
row: a write that makes one forgets the rows full by then, so the table holds the keys that
changed something in about the last hour."""

from __future__ import annotations

from ringfence.clock import Clock
from ringfence.ratelimit import Buckets, Change, Kept, R
from ringfence.store.connection import Connection
from ringfence.store.sql import SqlStore


class StoredBuckets(Buckets):
    def __init__(self, store: SqlStore, kind: str, rate: float, burst: float, clock: Clock) -> None:
        super().__init__(rate, burst, clock)
        self._store = store
        self._kind = kind  # several budgets share the table: "changes", ...

    def _update(self, name: str, change: Change[R]) -> R:
        row_name = f"{self._kind}\x1f{name}"
        kept, answer = self.changed(_kept(self._store.conn(), row_name), self.clock.time(), change)
        if kept is None:
            return answer
        with self._store.transaction() as conn:
            found = _kept(conn, row_name)
            now = self.clock.time()
            kept, answer = self.changed(found, now, change)
            if kept is None:
                return answer
            if found is None:
                conn.execute("DELETE FROM budgets WHERE full_at <= ?", (now,))
            tokens, at = kept
            if tokens >= self.burst:
                conn.execute("DELETE FROM budgets WHERE name = ?", (row_name,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO budgets VALUES (?, ?, ?, ?)",
                    (row_name, tokens, at, self.full_at(tokens, at)),
                )
        return answer


def _kept(conn: Connection, row_name: str) -> Kept | None:
    row = conn.execute("SELECT tokens, at FROM budgets WHERE name = ?", (row_name,)).fetchone()
    return None if row is None else (float(row[0]), float(row[1]))
