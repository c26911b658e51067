"""The data dir 0700 and its files 0600, whatever the umask or the modes found."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ringfence.private_files import UnsafeFile, private_dir, private_file, private_sqlite, read_input
from ringfence.runtimes.embedded.platform import lock_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def owner_said(
    real: Callable[..., os.stat_result], uid: int, only: Path | None = None
) -> Callable[..., os.stat_result]:
    """``real`` (``Path.stat`` or ``Path.lstat``) answering ``uid`` as the owner of ``only``
    (None: of every path): files of other users, without being root."""

    def answer(path: Path, **kwargs: bool) -> os.stat_result:
        info = real(path, **kwargs)
        if only is not None and path != only:
            return info
        fields = list(info)
        fields[stat.ST_UID] = uid
        return os.stat_result(fields)

    return answer


def test_a_new_dir_and_file_are_private_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        data_dir = private_dir(tmp_path / "a" / "b")
        file = private_file(data_dir / "f")
    finally:
        os.umask(old)
    assert (mode(tmp_path / "a"), mode(data_dir), mode(file)) == (0o755, 0o700, 0o600)  # no parent open to writes


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


def test_a_link_planted_in_the_data_dir_is_refused_and_what_it_points_at_is_untouched(tmp_path: Path) -> None:
    """A dir others could once write to: a link there would have Ringfence (perhaps root)
    truncate, write and chmod a file anywhere."""
    victim = tmp_path / "victim"
    victim.write_text("first line\nsecond line\n")
    victim.chmod(0o644)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o777)
    (data_dir / "processor.lock").symlink_to(victim)
    with pytest.raises(UnsafeFile, match="is a symbolic link"):
        lock_data_dir(data_dir)
    (data_dir / "store.sqlite3-wal").symlink_to(victim)
    with pytest.raises(UnsafeFile, match=r"store\.sqlite3-wal is a symbolic link"):
        private_sqlite(data_dir / "store.sqlite3")
    assert victim.read_text() == "first line\nsecond line\n"
    assert mode(victim) == 0o644


def test_a_file_of_another_user_than_the_dirs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = private_file(tmp_path / "store.sqlite3")
    monkeypatch.setattr(Path, "lstat", owner_said(Path.lstat, os.geteuid() + 4242, planted))
    with pytest.raises(UnsafeFile, match=f"belongs to user {os.geteuid() + 4242}, neither to the user running"):
        private_sqlite(planted)


def test_an_input_file_is_read_only_if_it_is_a_regular_file_within_its_bound(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):  # would wait for a writer, or never end
        with pytest.raises(OSError, match="is not a regular file"):
            read_input(path, 1024)
    text = tmp_path / "pack.yaml"
    text.write_bytes(b"x" * 1024)
    assert read_input(text, 1024) == b"x" * 1024
    with pytest.raises(OSError, match="larger than 1,023 bytes"):
        read_input(text, 1023)


def test_the_services_own_files_in_a_dir_another_user_owns_are_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume owned by root and shared with the service's group (Kubernetes' fsGroup): the
    files the service makes there are its own, not the dir owner's, and are accepted."""
    store = private_file(tmp_path / "store.sqlite3")
    monkeypatch.setattr(Path, "stat", owner_said(Path.stat, os.geteuid() + 4242, tmp_path))
    private_sqlite(store)  # not refused


def test_what_root_makes_in_a_service_users_data_dir_is_given_to_that_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sudo ringfence keys create`` on the service's data dir: a root-owned audit key, store or
    index dir there would stop the service (it could not open them) at its next start."""
    from ringfence.store.audit import load_or_create_key

    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    service = data_dir.stat().st_uid + 1001  # as if a service user owned it
    given: list[tuple[str, int]] = []
    monkeypatch.setattr(Path, "stat", owner_said(Path.stat, service, data_dir))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "fchown", lambda fd, uid, gid: given.append(("file", uid)))
    monkeypatch.setattr(os, "chown", lambda path, uid, gid: given.append((Path(path).name, uid)))
    monkeypatch.setattr(Path, "lstat", owner_said(Path.lstat, service))  # every file made there, too
    private_file(data_dir / "store.sqlite3")
    load_or_create_key(data_dir / "audit.key")
    private_dir(data_dir / "dedup-index")
    assert given == [("file", service), ("file", service), ("dedup-index", service)]


def test_an_index_dir_that_is_a_link_or_another_users_is_refused(tmp_path: Path) -> None:
    from ringfence.runtimes.embedded.dedup_index import open_index

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o755)  # whatever the umask an index opened before left
    data_dir = private_dir(tmp_path / "data")
    index = data_dir / "journal-000000000001.dedup"
    index.symlink_to(elsewhere)
    with pytest.raises(UnsafeFile, match="is a link or no directory"):
        open_index(index)
    assert mode(elsewhere) == 0o755  # not made Ringfence's
    assert list(elsewhere.iterdir()) == []


def test_an_anchor_that_is_a_link_or_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    from ringfence.store.audit import Anchor

    other = tmp_path / "other-anchor"
    other.write_text('{"seq": 1, "hash": "x"}\n')
    link = tmp_path / "store.sqlite3-audit-anchor"
    link.symlink_to(other)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        Anchor(link).heads()
    link.unlink()
    os.mkfifo(link)  # reading it would wait for a writer forever
    with pytest.raises(UnsafeFile, match="not a regular file"):
        Anchor(link).heads()


def test_a_data_dir_that_is_no_directory_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """``--data-dir /dev/null`` as root made /dev/null 0700 (no one else could write to it)."""
    file = tmp_path / "a-file"
    file.write_text("x")
    file.chmod(0o644)
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    fifo.chmod(0o644)  # whatever the umask
    for path in (file, fifo):
        with pytest.raises(UnsafeFile, match="is not a directory"):
            private_dir(path)
        assert mode(path) == 0o644


def test_input_lines_come_from_a_regular_file_each_within_its_bound(tmp_path: Path) -> None:
    from ringfence.private_files import input_lines

    events = tmp_path / "events.ndjson"
    events.write_bytes(b'{"a": 1}\n\n{"b": 2}')
    assert list(input_lines(events, 64)) == [b'{"a": 1}\n', b"\n", b'{"b": 2}']
    events.write_bytes(b"x" * 100 + b"\n")
    with pytest.raises(OSError, match="line 1 is longer than 64 bytes"):
        list(input_lines(events, 64))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):  # a writer never comes; a line never ends
        with pytest.raises(OSError, match="is not a regular file"):
            list(input_lines(path, 64))


def test_a_tls_certificate_that_is_a_fifo_is_refused_before_the_server_waits_on_it(tmp_path: Path) -> None:
    from ringfence.config import Settings
    from ringfence.runtimes.http_server import uvicorn_config

    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="is not a regular file"):
        uvicorn_config(None, Settings(tls_cert=fifo, tls_key=fifo))
