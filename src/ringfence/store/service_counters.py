"""Counters each service process keeps of its own work, shared through the store so that any
API process can add them up (the kafka runtime's ``/v1/stats``: ingest alone sees the events it
rejected, a worker the duplicates and late events of its partitions, dispatch its failed sends).

A process writes its counters' values since it started under an instance name of its own, so
a write repeated or lost changes nothing but how fresh they are, and a process started again
adds a new instance beside the old one's last values."""

from __future__ import annotations

from collections.abc import Mapping

from ringfence.store.sql import SqlStore


class ServiceCounters:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def record(self, instance: str, values: Mapping[str, float], at: float) -> None:
        """Set ``instance``'s counters to ``values`` (each a row of its own: autocommitted
        statements, no write lock taken every few seconds)."""
        conn = self._store.conn()
        for name, value in values.items():
            conn.execute("INSERT OR REPLACE INTO service_counters VALUES (?, ?, ?, ?)", (instance, name, value, at))

    def totals(self) -> dict[str, float]:
        """Every counter added up over all the instances that ever recorded one."""
        rows = self._store.conn().execute("SELECT name, sum(value) FROM service_counters GROUP BY name")
        return {name: float(total) for name, total in rows}
