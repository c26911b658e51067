"""Budgets every API process shares, in the store (:class:`~ringfence.ratelimit.Buckets`):
a key's budget of what its changes may add to the store an hour is one budget however many
``serve api`` processes answer it, and a restart does not fill it.

A bucket is a row of ``budgets`` (its name, tokens, when), read and written in one write
transaction (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's write lock): two processes charging one
key at once are serialized, neither's charge lost. A bucket full again needs no row: a write
that makes one forgets the rows full by then, so the table holds the keys that changed
something in about the last hour."""

from __future__ import annotations

from ringfence.clock import Clock
from ringfence.ratelimit import Buckets, Change, R
from ringfence.store.sql import SqlStore


class StoredBuckets(Buckets):
    def __init__(self, store: SqlStore, kind: str, rate: float, burst: float, clock: Clock) -> None:
        super().__init__(rate, burst, clock)
        self._store = store
        self._kind = kind  # several budgets share the table: "changes", ...

    def _update(self, name: str, change: Change[R]) -> R:
        row_name = f"{self._kind}\x1f{name}"
        with self._store.transaction() as conn:
            now = self.clock.time()
            row = conn.execute("SELECT tokens, at FROM budgets WHERE name = ?", (row_name,)).fetchone()
            tokens, answer = change(self.burst if row is None else self.refilled(float(row[0]), float(row[1]), now))
            if row is None:
                conn.execute("DELETE FROM budgets WHERE full_at <= ?", (now,))
            if tokens >= self.burst:
                conn.execute("DELETE FROM budgets WHERE name = ?", (row_name,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO budgets VALUES (?, ?, ?, ?)",
                    (row_name, tokens, now, self.full_at(tokens, now)),
                )
        return answer
