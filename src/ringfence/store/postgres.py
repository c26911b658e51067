"""The kafka runtime's store: the repositories of :mod:`.sql` on a pooled PostgreSQL.

The repositories' SQL is written once, in what SQLite and PostgreSQL share; the few SQLite
spellings left (``?`` placeholders, ``INSERT OR REPLACE``/``OR IGNORE``, ``rowid``, a couple
of scalar functions) are rewritten here, once per statement. Writers take one advisory lock
per transaction, as SQLite's ``BEGIN IMMEDIATE`` does: the read-then-write repositories
(alert dedup, the audit chain) stay serializable, and the store's write rate is bounded by
alerts and analyst actions, never by events.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ringfence.errors import StoreError
from ringfence.store import audit as audit_chain
from ringfence.store.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION, PRIMARY_KEYS
from ringfence.store.sql import SqlStore

WRITE_LOCK = 0x52494E47  # "RING": the advisory lock every write transaction holds
_REPLACE = re.compile(r"INSERT OR REPLACE INTO (\w+) VALUES \(([^)]*)\)")
_OFFSET = re.compile(r'(?<!")\boffset\b(?!")')  # a reserved word in PostgreSQL; OFFSET (upper) is the clause
_SPELLINGS = (
    ("rowid", "seq"),  # tables ordered by insertion carry a seq column in PostgreSQL
    ("min(starts_at, %s)", "LEAST(starts_at, %s)"),
    ("instr(state, %s) > 0", "position(convert_to(%s, 'UTF8') in state) > 0"),
    ("sum(hits)", "sum(hits)::bigint"),
)


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """``sql`` in the SQLite spelling the repositories use, as PostgreSQL (psycopg) takes it."""
    out = sql.replace("%", "%%")
    match = _REPLACE.search(out)
    if match is not None:
        table = match.group(1)
        if table not in PRIMARY_KEYS:
            raise StoreError(f"no primary key known for INSERT OR REPLACE into {table!r}")
        keys, values = PRIMARY_KEYS[table]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
        # names from PRIMARY_KEYS and the repositories' own SQL: nothing of a request's
        target = f"({', '.join(keys)}) DO UPDATE SET {updates}"  # constant names # nosec # B608
        upsert = f"INSERT INTO {table} VALUES ({match.group(2)}) ON CONFLICT {target}"  # constant names # nosec # noqa: S608
        out = out[: match.start()] + upsert + out[match.end() :]
    if "INSERT OR IGNORE INTO" in out:
        out = out.replace("INSERT OR IGNORE INTO", "INSERT INTO") + " ON CONFLICT DO NOTHING"
    out = out.replace("?", "%s")
    for sqlite_spelling, pg_spelling in _SPELLINGS:
        out = out.replace(sqlite_spelling, pg_spelling)
    return _OFFSET.sub('"offset"', out)


class _Result:
    """A statement's rows, fetched before its connection went back to the pool."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._read = 0  # rows fetchmany() has handed out
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchmany(self, size: int) -> list[Any]:
        chunk = self._rows[self._read : self._read + size]
        self._read += len(chunk)
        return chunk

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def _run(raw: Any, sql: str, parameters: Sequence[Any]) -> _Result:
    cur = raw.execute(translate(sql), tuple(parameters) or None)
    rows = cur.fetchall() if cur.description is not None else []
    return _Result(rows, cur.rowcount)


class PgConnection:
    """A connection of a transaction: every statement on it runs on the same PostgreSQL session."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.audit_head: audit_chain.Head | None = None  # set by an audit entry, logged once committed

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Result:
        return _run(self._raw, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> _Result:
        rows = [tuple(p) for p in parameters]
        if rows:
            with self._raw.cursor() as cur:
                cur.executemany(translate(sql), rows)
        return _Result([], len(rows))


class PooledConnection:
    """Autocommit reads: each statement borrows a pooled connection and returns it at once."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Result:
        with self._pool.connection() as raw:
            return _run(raw, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> _Result:
        with self._pool.connection() as raw:
            return PgConnection(raw).executemany(sql, parameters)


class PostgresStore(SqlStore):
    """Thread-safe: statements borrow connections from a psycopg pool of ``pool_size``."""

    def __init__(
        self, dsn: str, audit_key: bytes | None = None, pool_size: int = 8, connect_timeout_s: float = 30.0
    ) -> None:
        super().__init__(audit_key)
        from psycopg_pool import ConnectionPool  # the postgres extra, imported only when used

        self.dsn = dsn
        self.pool = ConnectionPool(
            dsn, min_size=1, max_size=pool_size, kwargs={"autocommit": True}, open=False, name="ringfence"
        )
        try:
            self.pool.open(wait=True, timeout=connect_timeout_s)
        except Exception as exc:
            self.pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {_redacted(dsn)}: {exc}") from exc
        self._reads = PooledConnection(self.pool)

    def conn(self) -> PooledConnection:
        return self._reads

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        with self.pool.connection() as raw:
            with raw.transaction():
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                conn = PgConnection(raw)
                yield conn
            if conn.audit_head is not None:
                audit_chain.log_head(conn.audit_head)

    def audit(self, conn: Any, now: float, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        super().audit(conn, now, actor, action, target, detail)
        if isinstance(conn, PgConnection):
            conn.audit_head = audit_chain.head(conn)

    def close(self) -> None:
        self.pool.close()

    # -- migrations ------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self.pool.connection() as raw:
            raw.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at DOUBLE PRECISION)"
            )
            row = raw.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> list[int]:
        """Apply the missing schema versions in one transaction (recorded, with their time, in
        ``schema_migrations``); return them. Concurrent callers serialize on the write lock."""
        applied: list[int] = []
        self.schema_version()  # creates the version table
        with self.transaction() as conn:
            version = int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])
            if version > PG_SCHEMA_VERSION:
                raise StoreError(f"the database has schema {version}, newer than this Ringfence ({PG_SCHEMA_VERSION})")
            for step in range(version + 1, PG_SCHEMA_VERSION + 1):
                for statement in PG_MIGRATIONS[step].split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (step, time.time()))
                applied.append(step)
        return applied

    def require_schema(self) -> None:
        """Raise StoreError unless the database is at this Ringfence's schema version."""
        version = self.schema_version()
        if version > PG_SCHEMA_VERSION:  # migrated for a newer release: this one is the old one
            raise StoreError(
                f"the database has schema {version}, newer than this Ringfence's ({PG_SCHEMA_VERSION}): "
                "run the release that migrated it (a migration is never undone)"
            )
        if version != PG_SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema {version}, this Ringfence needs {PG_SCHEMA_VERSION}: "
                "run `ringfence db migrate`"
            )


def _redacted(dsn: str) -> str:
    """Where ``dsn`` points, for messages and logs: its host, port, database and user only
    (libpq's own parse of it: never a password, however it was written)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except ProgrammingError:
        return "(a connection string libpq cannot read)"
    return " ".join(f"{k}={parts[k]}" for k in ("host", "hostaddr", "port", "dbname", "user") if parts.get(k))
