"""The data dir and every file in it are private to the user running Ringfence: the dir
0700, files 0600, whatever the umask, and whatever mode an existing dir or file had.

The journal (its main file, segment files and writer's lock), the store, their SQLite
``-wal``/``-shm`` files, the processor lock, the audit key and the audit anchor all go through
here. A dir or file that others could read is fixed and logged as a warning (it may have
leaked before).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import IO

log = logging.getLogger("ringfence.files")

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def _restrict(path: Path, mode: int, what: str) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current == mode:
        return
    try:
        path.chmod(mode)
    except OSError as exc:
        log.warning("%s %s has mode %o and cannot be made %o: %s", what, path, current, mode, exc)
        return
    if current & 0o077:
        log.warning("%s %s was open to group or others (mode %o); made it %o", what, path, current, mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed, and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _restrict(path, DIR_MODE, "data dir")
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if it does not exist, and make it 0600 (before anything is written).

    An existing file is never opened here, only chmod-ed: closing a descriptor of a SQLite file
    would drop the POSIX locks this process's connections hold on it.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE))
    _restrict(path, FILE_MODE, "file")
    return path


def private_sqlite(path: Path, *, create: bool = True) -> None:
    """Make a SQLite database file 0600 before SQLite opens it. SQLite creates its ``-wal`` and
    ``-shm`` files with the database file's mode; ones left by an older version are fixed.
    ``create=False``: a missing file is left missing (FileNotFoundError)."""
    if str(path) == ":memory:":
        return
    if create:
        private_file(path)
    else:
        _restrict(path, FILE_MODE, "file")
    for suffix in SQLITE_SIDECARS:
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists():
            _restrict(sidecar, FILE_MODE, "file")


def open_private(path: Path, mode: str = "a+") -> IO[str]:
    """Open a text file of the data dir, created 0600."""
    private_file(path)
    return open(path, mode, encoding="utf-8")  # the caller owns the handle
