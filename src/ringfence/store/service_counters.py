"""Counters each service process keeps of its own work, added up in the store so that any API
process can read the whole (the kafka runtime's ``/v1/stats``: ingest alone sees the events it
rejected, a worker the duplicates and late events of its partitions, dispatch its failed sends).

A process adds what it counted since its last write: a row a counter, whatever the processes
and their restarts. A write whose answer was lost (the connection dropped after its commit) and
is made again counts twice; a process killed loses what it had not written yet."""

from __future__ import annotations

from collections.abc import Mapping

from ringfence.store.sql import SqlStore


class ServiceCounters:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def add(self, counted: Mapping[str, float], at: float) -> None:
        """Add ``counted`` to the totals (each counter in one autocommitted statement: no write
        lock is taken every few seconds)."""
        conn = self._store.conn()
        for name, value in counted.items():
            if value:
                conn.execute(
                    "INSERT INTO service_counters VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                    "SET value = service_counters.value + EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                    (name, value, at),
                )

    def totals(self) -> dict[str, float]:
        rows = self._store.conn().execute("SELECT name, value FROM service_counters")
        return {name: float(value) for name, value in rows}
