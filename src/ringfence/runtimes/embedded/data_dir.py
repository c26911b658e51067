"""The embedded runtime's data dir: its files, its processor lock and its store."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ringfence.config import audit_key
from ringfence.errors import StoreError
from ringfence.private_files import open_private, private_dir
from ringfence.store.sqlite import SqliteStore

JOURNAL_FILE = "journal.sqlite3"
STORE_FILE = "store.sqlite3"
LOCK_FILE = "processor.lock"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data dir's processor lock: two processors on one log would double alerts.

    Raises StoreError if another process holds it. The lock dies with the process, so a
    kill -9 never leaves it stale.
    """
    private_dir(data_dir)
    handle = open_private(data_dir / LOCK_FILE)  # held for the platform's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(
            f"another Ringfence process is running on {data_dir}; stop it, or send to it with --url"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def open_store(data_dir: Path) -> SqliteStore:
    """The store of a data dir, created if needed (used by the CLI and the dispatcher process
    too, so all chain the audit trail with one key: the configured secret, else the data dir's
    ``audit.key``)."""
    private_dir(data_dir)
    return SqliteStore(data_dir / STORE_FILE, audit_key())
