"""The audit trail is tamper-evident: an edited or deleted entry is found, and reported."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ringfence.store import ApiKeys, SqliteStore
from ringfence.testing import ringfence_cli


def trail(path: Path, key: bytes | None = None) -> SqliteStore:
    store = SqliteStore(path, key)
    keys = ApiKeys(store)
    for i in range(5):
        keys.create(f"k{i}", ["alerts:read"], now=float(i))
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

    audit.rehash(raw, None)  # an attacker re-chains with the default key
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
