"""The data dir 0700 and its files 0600, whatever the umask or the modes found."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from ringfence.private_files import private_dir, private_file, private_sqlite


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_dir_and_file_are_private_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        data_dir = private_dir(tmp_path / "a" / "b")
        file = private_file(data_dir / "f")
    finally:
        os.umask(old)
    assert (mode(data_dir), mode(file)) == (0o700, 0o600)


def test_an_open_dir_is_made_private_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    with caplog.at_level("WARNING", logger="ringfence.files"):
        private_dir(data_dir)
    assert mode(data_dir) == 0o700
    assert "was open to group or others (mode 755); made it 700" in caplog.text


def test_sqlite_files_and_their_wal_and_shm_are_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = tmp_path / "x.sqlite3"
        (tmp_path / "x.sqlite3-wal").write_bytes(b"")  # left 0644 by an older version
        private_sqlite(db)
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (a)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        files = sorted(tmp_path.iterdir())
        assert {f.name for f in files} >= {"x.sqlite3", "x.sqlite3-wal", "x.sqlite3-shm"}
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        conn.close()
    finally:
        os.umask(old)


def test_an_existing_file_is_never_opened_so_sqlite_keeps_its_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing any descriptor of a SQLite file drops this process's POSIX locks on it."""
    file = tmp_path / "in-use.sqlite3"
    file.write_bytes(b"")
    file.chmod(0o644)
    flags: list[int] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, how, *a: flags.append(how) or real_open(path, how, *a))
    private_sqlite(file)
    assert mode(file) == 0o600
    assert flags
    assert all(how & os.O_EXCL for how in flags)  # create-only: fails before opening it
