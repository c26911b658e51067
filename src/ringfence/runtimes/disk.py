"""The disk left to the data dir, and the guard that stops taking events before it runs out.

The journal, the store's changelog and its snapshots share the data dir's disk. A disk that
fills stops everything at once: ingest's appends fail, the processor cannot commit, and a
restart cannot open the store. Past the floor, ingest answers 503 instead and readiness says
why; the processor goes on with what was taken, with room left to commit it and write its
snapshots (which retire the changelog).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

READ_EVERY_S = 1.0  # a statvfs per request is cheap, but the figure moves slowly next to requests


class DiskGuard:
    """Says when the disk of ``path`` has less than ``floor_bytes`` free (read at most every
    READ_EVERY_S)."""

    def __init__(self, path: Path, floor_bytes: int, free: Callable[[Path], int] | None = None) -> None:
        self._path = path
        self._floor = floor_bytes
        self._free = free or (lambda p: shutil.disk_usage(p).free)
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._left: int | None = None

    def shortage(self) -> str | None:
        """Why events should not be taken now, or None."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= READ_EVERY_S:
                try:
                    self._left = self._free(self._path)
                except OSError:
                    self._left = None  # a data dir gone is the store's to report
                self._read_at = now
            left = self._left
        if left is None or left >= self._floor:
            return None
        return (
            f"the data dir's disk has {left // 2**20} MiB free, under the {self._floor // 2**20} MiB kept free "
            "(min_free_disk_mib): events are refused until some is freed"
        )
