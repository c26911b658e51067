"""The embedded runtime's store: every repository in one SQLite file (see :mod:`.sql`)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ringfence.errors import StoreError
from ringfence.log.sqlite import connect
from ringfence.store import audit as audit_chain
from ringfence.store.schema import MIGRATIONS, SCHEMA_VERSION
from ringfence.store.sql import MAX_EVIDENCE_EVENTS, SYSTEM_ACTOR, SqlStore

__all__ = ["MAX_EVIDENCE_EVENTS", "SYSTEM_ACTOR", "SqliteStore"]


class SqliteStore(SqlStore):
    """Thread-safe (one connection per thread) SQLite store."""

    def __init__(self, path: Path, audit_key: bytes | None = None) -> None:
        super().__init__(audit_key)
        self.path = path
        self._local = threading.local()
        self._migrate()

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use :meth:`transaction` to write)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, "full")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locking) transaction, committed on success."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema {version}, newer than this Ringfence ({SCHEMA_VERSION})")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                # statement by statement: executescript() would commit the open transaction
                for statement in MIGRATIONS[step].split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                if step == 4:
                    audit_chain.rehash(conn, self.audit_key)
                conn.execute(f"PRAGMA user_version={step}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
