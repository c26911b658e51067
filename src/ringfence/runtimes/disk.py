"""The disk left to the data dir, and the guard that stops taking events before it runs out.

The journal, the store's changelog and its snapshots share the data dir's disk. A disk that
fills stops everything at once: ingest's appends fail, the processor cannot commit, and a
restart cannot open the store. Past the floor, ingest answers 503 instead and readiness says
why; the processor goes on with what was taken, with room left to commit it and write its
snapshots (which retire the changelog).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ringfence.runtimes.floor import Floor


class DiskGuard(Floor):
    """Says when the disk of ``path`` has less than ``floor_bytes`` free."""

    def __init__(self, path: Path, floor_bytes: int, free: Callable[[Path], int] | None = None) -> None:
        super().__init__(floor_bytes)
        self._path = path
        self._free = free or (lambda p: shutil.disk_usage(p).free)

    def left(self) -> int | None:
        try:
            return self._free(self._path)
        except OSError:
            return None  # a data dir gone is the store's to report

    def changes_shortage(self) -> str | None:
        """Why people's changes to alerts and silences, and admins' writes, should not be written
        now: the disk has under half the floor free. Ingest stops at the floor and analysts go on working the alerts
        they have; the last half is kept for the processor's commits and snapshots. (Each key's
        changes were bounded by its budget an hour alone, and many keys' filled the floor.)"""
        left = self.left_now()
        if left is None or left >= self.floor_bytes // 2:
            return None
        return (
            f"the data dir's disk has {left // 2**20} MiB free, under half the {self.floor_bytes // 2**20} MiB kept "
            "free (min_free_disk_mib): changes to alerts and silences are refused, and admins' writes "
            "(the rule pack, lists, FX rates, quarantined events' re-drives), until some is freed"
        )

    def describe(self, left: int) -> str:
        return (
            f"the data dir's disk has {left // 2**20} MiB free, under the {self.floor_bytes // 2**20} MiB kept free "
            "(min_free_disk_mib): events are refused until some is freed"
        )
