"""The data dir and every file in it are private to the user running Ringfence: the dir
0700, files 0600, whatever the umask, and whatever mode an existing dir or file had.

The journal (its main file, segment files and writer's lock), the store, their SQLite
``-wal``/``-shm`` files, the processor lock, the audit key and the audit anchor all go through
here. A dir or file that others could read is fixed and logged as a warning (it may have
leaked before). A file of the data dir that is a symbolic link, or that belongs to another user
than the dir, is refused (:class:`UnsafeFile`), never followed or used: in a dir others could
once write to, it would be how they make Ringfence (perhaps as root) truncate and chmod a file
elsewhere, or read keys they wrote. Missing parents of a data dir are created 0755 (not 0777
under a umask of 0).

:func:`read_input` reads a file named in settings or arguments (a rule pack, the alerting
config, a settings file, FX rates, a PEM) with a bound, and only a regular file: ``/dev/zero``
or a FIFO would otherwise exhaust memory or wait forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ringfence.errors import RingfenceError

log = logging.getLogger("ringfence.files")

DIR_MODE = 0o700
PARENT_MODE = 0o755
FILE_MODE = 0o600
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


class UnsafeFile(RingfenceError):
    """A file Ringfence would write, or read as its own, that may be another user's doing."""


def checked_own_file(path: Path) -> os.stat_result:
    """``path``'s own status (a link is not followed): refused if it is a link or no regular
    file (a FIFO would hang its reader, a device exhaust it), or if it belongs neither to the
    user running Ringfence nor to its dir's owner (a dir shared with a group, as a volume
    mounted with a group of its own, holds files of the service's user; root may tend a
    service user's data dir)."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFile(f"{path} is a symbolic link: Ringfence does not follow links in its data dir; remove it")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{path} is not a regular file (a directory, a device or a FIFO): remove it")
    owners = {os.geteuid(), path.parent.stat().st_uid}
    if info.st_uid not in owners:
        raise UnsafeFile(
            f"{path} belongs to user {info.st_uid}, neither to the user running Ringfence nor to its dir's "
            "owner: it is not Ringfence's own; remove it"
        )
    return info


def _restrict(path: Path, mode: int, what: str, info: os.stat_result | None = None) -> None:
    current = stat.S_IMODE((info or path.stat()).st_mode)
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
    """Create ``path`` if needed, and make it 0700. Its missing parents are made 0755 whatever
    the umask: others may pass through them, not put anything in them (a umask of 0 made them
    0777, where anyone could have swapped the data dir)."""
    for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            missing.mkdir(mode=DIR_MODE if missing == path else PARENT_MODE)
            tended = missing.parent.stat()
            if os.geteuid() == 0 and tended.st_uid != 0:  # root tending a service user's data dir
                os.chown(missing, tended.st_uid, tended.st_gid)
    if not path.is_dir():  # a file, a device (/dev/null): never made 0700
        raise UnsafeFile(f"{path} is not a directory: give a data dir")
    _restrict(path, DIR_MODE, "data dir")
    return path


def private_subdir(path: Path) -> Path:
    """A dir Ringfence keeps inside its data dir (a duplicate index), as :func:`private_dir`, but
    refused if a link or another user's is in its place: its files would be checked against it."""
    with contextlib.suppress(FileNotFoundError):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise UnsafeFile(f"{path} is a link or no directory: Ringfence does not follow links in its data dir")
        if info.st_uid not in {os.geteuid(), path.parent.stat().st_uid}:
            raise UnsafeFile(f"{path} belongs to user {info.st_uid}: it is not Ringfence's own; remove it")
    return private_dir(path)


def private_file(path: Path) -> Path:
    """Create ``path`` empty if it does not exist, and make it 0600 (before anything is written).

    An existing file is never opened here, only chmod-ed: closing a descriptor of a SQLite file
    would drop the POSIX locks this process's connections hold on it.
    """
    with contextlib.suppress(FileExistsError):  # O_EXCL: a link in its place is not followed
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        try:
            give_to_dir_owner(fd, path)
        finally:
            os.close(fd)
    _restrict(path, FILE_MODE, "file", checked_own_file(path))
    return path


def give_to_dir_owner(fd: int, path: Path) -> None:
    """A file root just made in a service user's data dir (a CLI command run with sudo) is
    given to that user, who could not open it otherwise."""
    tended = path.parent.stat()
    if os.geteuid() == 0 and tended.st_uid != 0:
        os.fchown(fd, tended.st_uid, tended.st_gid)


def private_sqlite(path: Path, *, create: bool = True) -> None:
    """Make a SQLite database file 0600 before SQLite opens it. SQLite creates its ``-wal`` and
    ``-shm`` files with the database file's mode; ones left by an older version are fixed.
    ``create=False``: a missing file is left missing (FileNotFoundError)."""
    if str(path) == ":memory:":
        return
    if create:
        private_file(path)
    else:
        _restrict(path, FILE_MODE, "file", checked_own_file(path))
    for suffix in SQLITE_SIDECARS:
        sidecar = path.with_name(path.name + suffix)
        if sidecar.is_symlink() or sidecar.exists():
            _restrict(sidecar, FILE_MODE, "file", checked_own_file(sidecar))


def open_private(path: Path, mode: str = "a+") -> IO[str]:
    """Open a text file of the data dir, created 0600."""
    private_file(path)
    # the caller owns the handle; O_NOFOLLOW: a link put in its place since is not followed either
    return open(path, mode, encoding="utf-8", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW))


def regular_input(path: Path) -> IO[bytes]:
    """``path`` opened to read, if it is a regular file (a FIFO would wait for a writer forever,
    ``/dev/zero`` never end): OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file (a directory, a device or a FIFO)")
    return os.fdopen(fd, "rb")


def input_lines(path: Path, longest: int) -> Iterator[bytes]:
    """The lines of ``path`` (NDJSON events), a regular file, each at most ``longest`` bytes
    (OSError naming the line past it: one line of gigabytes would be held whole)."""
    with regular_input(path) as handle:
        number = 0
        while line := handle.readline(longest + 1):
            number += 1
            if len(line) > longest and not line.endswith(b"\n"):
                raise OSError(f"{path}: line {number} is longer than {longest:,} bytes")
            yield line


def read_input(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes, read once. Anything
    else (a FIFO, a device, a directory) is refused before a byte is read, and a file larger
    than ``limit`` (or growing past it while read) is refused at ``limit + 1`` bytes: OSError
    naming what is wrong."""
    with regular_input(path) as handle:  # O_NONBLOCK: opening a FIFO does not wait for a writer
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path} is larger than {limit:,} bytes")
    return data
