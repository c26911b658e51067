"""The audit trail is tamper-evident: an edited or deleted entry is found, and reported."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ringfence.bench.servers import ringfence_cli
from ringfence.config import load_settings
from ringfence.errors import StoreError
from ringfence.runtimes.embedded.platform import Platform
from ringfence.store import SqliteStore
from ringfence.store.sql import SqlStore


def trail(path: Path, key: bytes | None = None, entries: int = 5) -> SqliteStore:
    store = SqliteStore(path, key)
    for i in range(entries):
        with store.transaction() as conn:
            store.audit(conn, float(i), "test", "key.create", f"k{i}", {"scopes": ["alerts:read"]})
    return store


def test_an_intact_trail_verifies(tmp_path: Path) -> None:
    verdict = trail(tmp_path / "s.db").verify_audit()
    assert verdict.ok
    assert verdict.entries == 5


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE audit SET actor = 'mallory' WHERE seq = 3", "entry 3 (key.create k2) was altered"),
        ("UPDATE audit SET detail = '{}' WHERE seq = 1", "entry 1 (key.create k0) was altered"),
        ("DELETE FROM audit WHERE seq = 2", "entries 2..2 were deleted"),
        ("DELETE FROM audit WHERE seq >= 4", "the newest entries after 3 were deleted"),
    ],
)
def test_tampering_is_found(tmp_path: Path, sql: str, problem: str) -> None:
    store = trail(tmp_path / "s.db")
    raw = sqlite3.connect(tmp_path / "s.db")
    raw.execute(sql)
    raw.commit()
    verdict = store.verify_audit()
    assert not verdict.ok
    assert any(p.startswith(problem) for p in verdict.problems), verdict.problems


def test_a_recomputed_chain_fails_without_the_key(tmp_path: Path) -> None:
    store = trail(tmp_path / "s.db", key=b"the-real-key")
    raw = sqlite3.connect(tmp_path / "s.db")
    raw.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    from ringfence.store import audit

    audit.rehash(raw, audit.LEGACY_KEY)  # an attacker re-chains with the old public constant
    raw.commit()
    assert not store.verify_audit().ok


def test_audit_verify_cli_detects_an_edited_row(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    ringfence_cli("keys", "create", "--name", "a", "--scope", "admin", data_dir=data_dir)
    ringfence_cli("keys", "create", "--name", "b", "--scope", "admin", data_dir=data_dir)
    assert "OK: 2 audit entries" in ringfence_cli("audit", "verify", data_dir=data_dir).stdout
    raw = sqlite3.connect(data_dir / "store.sqlite3")
    raw.execute("UPDATE audit SET target = 'c' WHERE seq = 2")
    raw.commit()
    result = ringfence_cli("audit", "verify", data_dir=data_dir, check=False)
    assert result.returncode == 1
    assert "TAMPERED: entry 2 (key.create c) was altered" in result.stderr


def raw_sql(path: Path, *statements: str) -> None:
    raw = sqlite3.connect(path)
    for statement in statements:
        raw.execute(statement)
    raw.commit()
    raw.close()


@pytest.mark.parametrize(
    "statements",
    [
        # the newest entries cut off and the head moved back to match: the chain alone is intact
        (
            "DELETE FROM audit WHERE seq >= 4",
            "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit WHERE seq = 3)",
        ),
        ("DELETE FROM audit", "DELETE FROM audit_head"),
    ],
    ids=["head-moved-back", "emptied"],
)
def test_truncation_is_found_through_the_anchor(tmp_path: Path, statements: tuple[str, ...]) -> None:
    trail(tmp_path / "s.db")
    raw_sql(tmp_path / "s.db", *statements)
    verdict = SqliteStore(tmp_path / "s.db").verify_audit()
    assert not verdict.ok
    assert any(p.startswith("the trail was truncated") and "entry 5 was recorded" in p for p in verdict.problems)


def test_a_rollback_rewritten_with_the_key_is_found_through_the_anchor(tmp_path: Path) -> None:
    store = trail(tmp_path / "s.db", key=b"insider-key")
    raw_sql(tmp_path / "s.db", "DELETE FROM audit WHERE seq >= 3", "DELETE FROM sqlite_sequence WHERE name = 'audit'")
    raw = sqlite3.connect(tmp_path / "s.db")
    from ringfence.store import audit

    audit.rehash(raw, b"insider-key")
    for i in range(3):  # the same number of entries again, other contents, a consistent chain
        audit.append(raw, b"insider-key", 100.0 + i, "mallory", "key.create", f"m{i}", "{}")
    raw.commit()
    problems = store.verify_audit().problems
    assert problems == ["the trail was rolled back and rewritten: entry 3 is not the one recorded outside the database"]


def test_the_anchor_is_a_private_append_only_record_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="ringfence.audit"):
        trail(tmp_path / "s.db", entries=3)
    anchor = tmp_path / "s.db-audit-anchor"
    assert stat.S_IMODE(anchor.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in anchor.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3]
    assert sum("audit head: entry" in r.getMessage() for r in caplog.records) == 3
    assert lines[-1]["hash"] in caplog.records[-1].getMessage()


def test_a_rolled_back_transaction_is_not_anchored(tmp_path: Path) -> None:
    store = trail(tmp_path / "s.db", entries=2)

    def audit_then_fail() -> None:
        with store.transaction() as conn:
            store.audit(conn, 9.0, "test", "key.create", "gone", {})
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        audit_then_fail()
    assert store.verify_audit().ok
    assert len((tmp_path / "s.db-audit-anchor").read_text().splitlines()) == 2


def test_without_a_secret_a_random_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "s.db")
    key_file = tmp_path / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.audit_key == key_file.read_bytes().strip()
    assert len(bytes.fromhex(first.audit_key.decode())) == 32
    assert SqliteStore(tmp_path / "s.db").audit_key == first.audit_key  # the CLI and the server agree
    other = tmp_path / "other"
    other.mkdir()
    assert SqliteStore(other / "s.db").audit_key != first.audit_key  # random, not a constant


def test_a_configured_secret_is_used_and_no_key_file_is_made(tmp_path: Path) -> None:
    store = trail(tmp_path / "s.db", key=b"from-the-secret", entries=2)
    assert store.audit_key == b"from-the-secret"
    assert not (tmp_path / "audit.key").exists()


def test_a_store_opened_with_another_key_is_refused(tmp_path: Path) -> None:
    trail(tmp_path / "s.db", key=b"the-server-key", entries=2)
    with pytest.raises(StoreError, match="made with another key"):
        SqliteStore(tmp_path / "s.db")  # a CLI command run without the server's secret


def test_a_trail_chained_with_the_old_public_constant_is_re_keyed_once(tmp_path: Path) -> None:
    from ringfence.store import audit

    trail(tmp_path / "s.db", entries=3)
    raw = sqlite3.connect(tmp_path / "s.db")
    audit.rehash(raw, audit.LEGACY_KEY)  # as every data dir made before audit keys existed
    raw.commit()
    raw.close()
    (tmp_path / "audit.key").unlink()
    (tmp_path / "s.db-audit-anchor").unlink()

    store = SqliteStore(tmp_path / "s.db")
    verdict = store.verify_audit()
    assert verdict.ok
    assert verdict.entries == 4
    entries, _ = store.list_audit()
    assert entries[0]["action"] == "audit.rekey"
    assert not audit.verify(store.conn(), audit.LEGACY_KEY).ok
    assert SqliteStore(tmp_path / "s.db").verify_audit().entries == 4  # once only


def test_a_trail_made_with_a_secret_that_is_now_missing_is_refused_without_making_a_key(tmp_path: Path) -> None:
    trail(tmp_path / "s.db", key=b"was-in-the-environment", entries=2)
    (tmp_path / "s.db-audit-anchor").unlink()
    with pytest.raises(StoreError, match="not made with a key this process has"):
        SqliteStore(tmp_path / "s.db")
    assert not (tmp_path / "audit.key").exists()


def test_audit_verify_cli_reports_truncation(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o700)
    store = trail(data_dir / "store.sqlite3", entries=3)  # the data dir's own key, as the CLI uses
    store.close()
    raw_sql(data_dir / "store.sqlite3", "DELETE FROM audit", "DELETE FROM audit_head")
    result = ringfence_cli("audit", "verify", data_dir=data_dir, check=False)
    assert result.returncode == 1
    assert "TAMPERED: the trail was truncated: it ends at entry 0, but entry 3 was recorded" in result.stderr


def test_audit_verify_cli_checks_a_head_from_the_logs(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o700)
    store = trail(data_dir / "store.sqlite3", entries=3)
    head = store.conn().execute("SELECT seq, hash FROM audit_head").fetchone()
    store.close()
    ok = ringfence_cli("audit", "verify", "--head", f"{head[0]}:{head[1]}", data_dir=data_dir)
    assert "OK: 3 audit entries, chain intact; entry 3 is the one logged" in ok.stdout
    (data_dir / "store.sqlite3-audit-anchor").unlink()  # the anchor file gone too: the log still knows
    raw_sql(data_dir / "store.sqlite3", "DELETE FROM audit WHERE seq = 3", "UPDATE audit_head SET seq = 2")
    bad = ringfence_cli("audit", "verify", "--head", f"{head[0]}:{head[1]}", data_dir=data_dir, check=False)
    assert bad.returncode == 1
    assert "TAMPERED: the trail was truncated: it ends at entry 2, but entry 3 was recorded" in bad.stderr
    malformed = ringfence_cli("audit", "verify", "--head", "3:xyz", data_dir=data_dir, check=False)
    assert malformed.returncode == 2


def test_postgres_logs_each_committed_head_and_a_truncation_is_found_against_it(
    make_pg_store: Callable[..., SqlStore], caplog: pytest.LogCaptureFixture
) -> None:
    from ringfence.store import audit

    store = make_pg_store(b"pg-audit-key")
    with caplog.at_level("INFO", logger="ringfence.audit"):
        for i in range(3):
            with store.transaction() as conn:
                store.audit(conn, float(i), "test", "key.create", f"k{i}", {})
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit head")]
    assert [m.split(",")[0] for m in logged] == ["audit head: entry 1", "audit head: entry 2", "audit head: entry 3"]
    last = audit.Head(3, logged[-1].rsplit(" ", 1)[1])
    with store.transaction() as conn:
        conn.execute("DELETE FROM audit WHERE seq = 3")
        conn.execute("UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit WHERE seq = 2)")
    assert store.verify_audit().ok  # the chain alone cannot tell
    assert audit.check_anchored(store.conn(), [last]) == [
        "the trail was truncated: it ends at entry 2, but entry 3 was recorded outside the database"
    ]


def test_postgres_without_an_audit_key_writes_no_audit_entry(make_pg_store: Callable[..., SqlStore]) -> None:
    store = make_pg_store(None)
    with pytest.raises(StoreError, match="needs a key"), store.transaction() as conn:
        store.audit(conn, 1.0, "test", "key.create", "k", {})


def test_the_kafka_runtime_refuses_to_start_without_the_audit_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from ringfence.config import load_settings
    from ringfence.errors import ConfigError
    from ringfence.runtimes.kafka.platform import open_postgres

    monkeypatch.delenv("RINGFENCE_SECRET_AUDIT_KEY", raising=False)
    settings = load_settings(environ={"RINGFENCE_POSTGRES_DSN": "postgresql://ringfence@127.0.0.1:1/none"})
    with pytest.raises(ConfigError, match="needs RINGFENCE_SECRET_AUDIT_KEY"):
        open_postgres(settings)


def test_a_deleted_anchor_is_restarted_in_the_trail_itself_and_verify_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o700)
    trail(data_dir / "store.sqlite3", entries=5).close()
    # cut off the newest entries, move the head back, and delete the anchor that would tell
    raw_sql(
        data_dir / "store.sqlite3",
        "DELETE FROM audit WHERE seq >= 4",
        "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit WHERE seq = 3)",
        "UPDATE sqlite_sequence SET seq = 3 WHERE name = 'audit'",  # a careful attacker leaves no gap
    )
    (data_dir / "store.sqlite3-audit-anchor").unlink()
    result = ringfence_cli("audit", "verify", data_dir=data_dir, check=False)
    assert "NOTE: the anchor was restarted at entry 4" in result.stderr  # the restart is an audit entry
    store = SqliteStore(data_dir / "store.sqlite3")
    (restart,) = [row for row in store.conn().execute("SELECT seq, action FROM audit") if row[1].endswith("restart")]
    assert restart[0] == 4
    assert store.verify_audit().notes  # said every time, not only once


def test_an_emptied_or_rolled_back_store_is_not_served(tmp_path: Path) -> None:
    """Served, it would have lost its keys and acknowledgements, and would process the log
    from its start again: every notification sent twice. ``audit verify`` still reads it."""
    data_dir = tmp_path / "d"
    ringfence_cli("keys", "create", "--name", "a", "--scope", "admin", data_dir=data_dir)
    ringfence_cli("keys", "create", "--name", "b", "--scope", "admin", data_dir=data_dir)
    store_file = data_dir / "store.sqlite3"
    settings = load_settings(environ={}, data_dir=data_dir)
    Platform(settings).stop()  # as it is: served
    raw_sql(store_file, "DELETE FROM audit WHERE seq >= 2", "UPDATE audit_head SET seq = 1")  # rolled back
    with pytest.raises(StoreError, match=r"does not hold audit entry \d+, which store\.sqlite3-audit-anchor recorded"):
        Platform(settings)
    store_file.write_bytes(b"")  # emptied: SQLite takes it for a new database
    with pytest.raises(StoreError, match="emptied, replaced or rolled back"):
        Platform(settings)
    result = ringfence_cli("audit", "verify", data_dir=data_dir, check=False)
    assert "TAMPERED" in result.stderr
    assert "the trail was truncated" in result.stderr
