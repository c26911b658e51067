"""API keys: shown once, stored hashed, scoped, revocable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ringfence.errors import AuthError, ForbiddenError, StoreError
from ringfence.store import ApiKeys
from ringfence.store.connection import connect
from ringfence.store.sql import SqlStore
from ringfence.store.sqlite import SqliteStore


@pytest.fixture
def keys(any_store: SqlStore) -> ApiKeys:
    return ApiKeys(any_store)


def test_a_created_key_authenticates_with_its_scopes(keys: ApiKeys) -> None:
    token = keys.create("producer", ["events:write"], now=1.0)
    info = keys.authenticate(token, now=2.0)
    assert info.name == "producer"
    assert info.allows("events:write")
    assert not info.allows("alerts:read")
    with pytest.raises(ForbiddenError):
        ApiKeys.require(info, "alerts:read")


def test_admin_keys_allow_every_scope(keys: ApiKeys) -> None:
    info = keys.authenticate(keys.create("root", ["admin"], now=1.0), now=1.0)
    assert info.allows("rules:write")


def test_the_secret_is_never_stored(any_store: SqlStore, keys: ApiKeys) -> None:
    token = keys.create("producer", ["events:write"], now=1.0)
    secret = token.split("_", 2)[2]  # rf_<key id>_<secret>; the secret may itself hold "_"
    tables = ("api_keys", "audit", "sessions")
    dump = "\n".join(repr(row) for t in tables for row in any_store.conn().execute(f"SELECT * FROM {t}"))
    assert "producer" in dump  # the dump holds the key's row
    assert secret not in dump
    assert token not in dump


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: "rf_000000000000_" + t.split("_", 2)[2],
        lambda t: "garbage",
    ],
)
def test_wrong_unknown_or_malformed_keys_are_refused(keys: ApiKeys, mangle) -> None:  # type: ignore[no-untyped-def]
    token = keys.create("producer", ["events:write"], now=1.0)
    with pytest.raises(AuthError):
        keys.authenticate(mangle(token), now=2.0)


def test_a_revoked_key_is_refused_and_its_name_can_be_reused(keys: ApiKeys) -> None:
    token = keys.create("producer", ["events:write"], now=1.0)
    keys.revoke("producer", now=2.0)
    with pytest.raises(AuthError, match="revoked"):
        keys.authenticate(token, now=3.0)
    fresh = keys.create("producer", ["events:write"], now=4.0)
    assert keys.authenticate(fresh, now=5.0).name == "producer"


def test_active_names_are_unique_and_scopes_checked(keys: ApiKeys) -> None:
    keys.create("producer", ["events:write"], now=1.0)
    with pytest.raises(StoreError, match="exists"):
        keys.create("producer", ["events:write"], now=1.0)
    with pytest.raises(StoreError, match="scope"):
        keys.create("other", ["root"], now=1.0)
    with pytest.raises(StoreError, match="invalid key name"):
        keys.create("bad name", ["admin"], now=1.0)


def test_last_used_is_recorded(keys: ApiKeys) -> None:
    token = keys.create("producer", ["events:write"], now=1.0)
    keys.authenticate(token, now=100.0)
    assert keys.list()[0].last_used_at == 100.0


def test_a_key_bound_to_sources_carries_them_everywhere(keys: ApiKeys) -> None:
    token = keys.create("app", ["events:write"], now=1.0, sources=["web", "mobile-app", "web"])
    info = keys.authenticate(token, now=2.0)
    assert info.sources == ("mobile-app", "web")
    assert info.writable_sources == frozenset({"mobile-app", "web"})
    assert keys.by_id(info.key_id) == info
    assert keys.list()[0].sources == ("mobile-app", "web")


def test_a_key_without_sources_may_write_any(keys: ApiKeys) -> None:
    info = keys.authenticate(keys.create("legacy", ["events:write"], now=1.0), now=2.0)
    assert info.sources == ()
    assert info.writable_sources is None


def test_source_names_are_checked_like_event_sources(keys: ApiKeys) -> None:
    with pytest.raises(StoreError, match="invalid source"):
        keys.create("app", ["events:write"], now=1.0, sources=["bad source!"])
    with pytest.raises(StoreError, match="invalid source"):
        keys.create("app", ["events:write"], now=1.0, sources=["x" * 65])


def test_a_key_still_authenticates_when_its_last_use_cannot_be_written(
    any_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-test: with the data dir's disk full, noting a key's last use failed, and every
    request was a 500, reads included."""
    keys = ApiKeys(any_store)
    token = keys.create("reader", ["alerts:read"], now=1.0)
    real = any_store.conn

    class DiskFull:
        def __init__(self, conn: object) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: object) -> object:
            if sql.startswith("UPDATE api_keys"):
                raise StoreError("database or disk is full")
            return self._conn.execute(sql, *args)  # type: ignore[attr-defined]

    monkeypatch.setattr(any_store, "conn", lambda: DiskFull(real()))
    assert keys.authenticate(token, now=1_000.0).name == "reader"


@pytest.mark.serial  # < 0.5 s
def test_a_keys_first_request_of_a_minute_does_not_wait_for_the_stores_writer(tmp_path: Path) -> None:
    """A hostile test: noting when a key was last used wrote the store on the request's thread
    (the event loop's), behind the processor's commits: 1-2 s for each fresh key's request, and
    every other request waited with it. The note is written by a thread of its own."""
    store = SqliteStore(tmp_path / "store.sqlite3")
    keys = ApiKeys(store)
    token = keys.create("producer", ["events:write"], now=1.0)
    writer = connect(tmp_path / "store.sqlite3")
    writer.execute("BEGIN IMMEDIATE")  # the processor's commit, holding the write lock
    try:
        began = time.monotonic()
        assert keys.authenticate(token, now=100.0).name == "producer"
        assert time.monotonic() - began < 0.5
        assert keys.list()[0].last_used_at == 100.0  # shown before it is written
    finally:
        writer.execute("ROLLBACK")
    deadline = time.monotonic() + 10
    while store.conn().execute("SELECT last_used_at FROM api_keys").fetchone()[0] != 100.0:
        assert time.monotonic() < deadline, "the note was never written"
        time.sleep(0.02)
    writer.close()


def test_a_stop_writes_the_last_used_times_not_written_yet_and_nothing_after(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    keys = ApiKeys(store)
    token = keys.create("producer", ["events:write"], now=1.0)
    writer = connect(tmp_path / "store.sqlite3")
    writer.execute("BEGIN IMMEDIATE")  # the note waits behind a commit
    keys.authenticate(token, now=100.0)
    writer.execute("ROLLBACK")
    keys.close()  # before the store closes: what was noted is written
    assert store.conn().execute("SELECT last_used_at FROM api_keys").fetchone()[0] == 100.0
    keys.authenticate(token, now=1000.0)  # after: not noted (nothing may open the store again)
    time.sleep(0.2)
    assert store.conn().execute("SELECT last_used_at FROM api_keys").fetchone()[0] == 100.0
    writer.close()
