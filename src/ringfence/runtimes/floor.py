"""A resource's floor: what is left of it, read at most every READ_EVERY_S (the kernel's figures
move slowly next to requests), and why events should not be taken while it is under the floor.
Memory (:mod:`ringfence.runtimes.memory`) and the data dir's disk (:mod:`ringfence.runtimes.disk`).
"""

from __future__ import annotations

import threading
import time

READ_EVERY_S = 1.0


class Floor:
    """What is left of a resource against ``floor_bytes``; subclasses read it (:meth:`left`)
    and say what a shortage is (:meth:`describe`)."""

    def __init__(self, floor_bytes: int) -> None:
        self.floor_bytes = floor_bytes
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._left: int | None = None

    def left(self) -> int | None:
        """Bytes left now; None where it cannot be read."""
        raise NotImplementedError

    def describe(self, left: int) -> str:
        """Why events are refused with ``left`` bytes left."""
        raise NotImplementedError

    def shortage(self) -> str | None:
        """Why events should not be taken now, or None."""
        left = self.left_now()
        return None if left is None or left >= self.floor_bytes else self.describe(left)

    def left_now(self) -> int | None:
        """:meth:`left`, as read at most :data:`READ_EVERY_S` ago."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= READ_EVERY_S:
                self._left, self._read_at = self.left(), now
            return self._left
