"""What is PostgreSQL's own in the kafka runtime's store: migrations, the SQL rewriting, and
concurrent writers (several services share one database) — against a real server."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from ringfence.config import load_settings
from ringfence.errors import ConfigError, StoreError
from ringfence.store.keys import ApiKeys
from ringfence.store.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION
from ringfence.store.postgres import PostgresStore, translate
from ringfence.store.silences import SqlSilenceStore
from ringfence.store.sql import SqlStore
from tests.helpers.servers import PostgresCluster

pytestmark = pytest.mark.integration


def test_sqlite_spellings_become_postgresql() -> None:
    assert translate("INSERT OR REPLACE INTO watermarks VALUES (?, ?)") == (
        "INSERT INTO watermarks VALUES (%s, %s) "
        "ON CONFLICT (partition) DO UPDATE SET max_event_time = EXCLUDED.max_event_time"
    )
    assert translate("INSERT OR IGNORE INTO late_events VALUES (?)") == (
        "INSERT INTO late_events VALUES (%s) ON CONFLICT DO NOTHING"
    )
    assert translate("SELECT offset FROM processor_offsets ORDER BY at, rowid LIMIT ? OFFSET ?") == (
        'SELECT "offset" FROM processor_offsets ORDER BY at, seq LIMIT %s OFFSET %s'
    )
    assert translate("SELECT '100%' WHERE a = ?") == "SELECT '100%%' WHERE a = %s"
    with pytest.raises(StoreError, match="no primary key known"):
        translate("INSERT OR REPLACE INTO alerts VALUES (?)")


def test_migrations_apply_once_and_services_refuse_an_unmigrated_database(postgres: PostgresCluster) -> None:
    store = PostgresStore(postgres.new_database(), pool_size=2)
    try:
        with pytest.raises(StoreError, match="run `ringfence db migrate`"):
            store.require_schema()
        assert store.migrate() == list(range(1, PG_SCHEMA_VERSION + 1))
        assert store.migrate() == []
        store.require_schema()
        rows = list(store.conn().execute("SELECT version, applied_at FROM schema_migrations ORDER BY version"))
        assert [v for v, _ in rows] == list(range(1, PG_SCHEMA_VERSION + 1))
        assert all(a > 0 for _, a in rows)
        # migrated for a newer release (a rollout under way): this release says it is the old one,
        # rather than asking for a migration that would refuse it (found by a hostile test)
        store.conn().execute("INSERT INTO schema_migrations VALUES (?, ?)", (PG_SCHEMA_VERSION + 1, 1.0))
        with pytest.raises(StoreError, match="newer than this Ringfence's") as refused:
            store.require_schema()
        assert "db migrate" not in str(refused.value)
    finally:
        store.close()


@pytest.mark.parametrize(
    "dsn", ["postgresql://u:hunter2@127.0.0.1:1/db", "host=127.0.0.1 port=1 dbname=db user=u password = 'hunter2 x'"]
)
def test_an_unreachable_server_is_a_clear_error_without_the_password(dsn: str) -> None:
    with pytest.raises(
        StoreError, match=r"cannot connect to PostgreSQL at host=127.0.0.1 port=1 dbname=db user=u: "
    ) as e:
        PostgresStore(dsn, pool_size=1, connect_timeout_s=2)
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:secret@db/ringfence",
        "host=db password=secret",
        "host=db password = secret",  # libpq reads it as a password (a pattern on "password=" did not)
        "host=db password='two words'",
        "postgresql://u@db/ringfence?password=secret",
    ],
)
def test_settings_refuse_a_dsn_holding_a_password(dsn: str) -> None:
    with pytest.raises(ConfigError, match="must not hold a password"):
        load_settings(environ={"RINGFENCE_POSTGRES_DSN": dsn})


@pytest.mark.parametrize("dsn", [" postgresql://app:s3cr3tPW@db/rf", "postgresql://app:s3cr3tPW@[fd00::1/rf"])
def test_a_dsn_libpq_cannot_read_is_refused_without_quoting_it(dsn: str) -> None:
    with pytest.raises(ConfigError, match="is not a libpq connection string") as refused:
        load_settings(environ={"RINGFENCE_POSTGRES_DSN": dsn})
    assert "s3cr3tPW" not in str(refused.value)


def test_concurrent_writers_keep_one_unbroken_audit_chain(make_pg_store: Callable[..., SqlStore]) -> None:
    store = make_pg_store(b"audit-key")
    keys = ApiKeys(store)
    errors: list[BaseException] = []

    def create(worker: int) -> None:
        try:
            for i in range(10):
                keys.create(f"k{worker}-{i}", ["alerts:read"], now=float(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    verdict = store.verify_audit()
    assert verdict.ok, verdict.problems
    assert verdict.entries == 40
    store.conn().execute("UPDATE audit SET actor = 'mallory' WHERE seq = 7")
    assert not store.verify_audit().ok


def test_silences_made_before_they_paged_are_listed_newest_first(postgres: PostgresCluster) -> None:
    """Migration 8 numbers the silences already there by when they were made, not as the
    table happens to store them (an expired one, rewritten, is stored last)."""
    store = PostgresStore(postgres.new_database(), b"audit-key-for-this-test-0123456789", pool_size=2)
    try:
        store.schema_version()
        with store.transaction() as conn:
            for step in range(1, 8):
                for statement in PG_MIGRATIONS[step].split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (step, 1.0))
            for made in (5.0, 1.0, 4.0, 2.0, 3.0):  # stored out of order
                conn.execute(
                    "INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (f"sil_{made:.0f}", '["rule_id=a"]', made, made + 60, "ana", "why", made),
                )
            conn.execute("UPDATE silences SET ends_at = 9.0 WHERE id = 'sil_1'")  # expired: rewritten
        assert store.migrate() == list(range(8, PG_SCHEMA_VERSION + 1))
        silences = SqlSilenceStore(store)
        page, cursor = silences.silences(2, None, 10.0)
        rest, end = silences.silences(10, cursor, 10.0)
        assert [s.id for s in page + rest] == ["sil_5", "sil_4", "sil_3", "sil_2", "sil_1"]
        assert end is None
        made = silences.create_silence(["rule_id=b"], 10.0, 70.0, "ana", "new", now=10.0)
        assert silences.silences(1, None, 10.0)[0][0].id == made.id  # numbered after them
    finally:
        store.close()
