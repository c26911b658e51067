"""How many events a second the processor gets through while it works: backpressure's measure
of how long what waits will take (:meth:`ringfence.runtimes.embedded.platform.Platform.wait_s`).

Measured over the processor's busy time only (its steps that processed events), so it is known
from the first batches of a burst, not once the processor has been behind a while: events of
one key taken at 40,000 a second were 44,000 ahead before a rate over a second of being behind
said anything (a re-test).
"""

from __future__ import annotations

import threading

KEEP = 0.9  # each step weighs what came before by this: the last few dozen steps count


class Pace:
    """Events a second of the processor's busy time, of its recent steps. Added to by the
    processor's thread, read by ingest's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events = 0.0
        self._seconds = 0.0

    def add(self, events: int, seconds: float) -> None:
        """A step processed ``events`` in ``seconds``."""
        with self._lock:
            self._events = self._events * KEEP + events
            self._seconds = self._seconds * KEEP + seconds

    def rate(self) -> float | None:
        """Events a second, or None before any step was measured."""
        with self._lock:
            return self._events / self._seconds if self._seconds > 0 and self._events > 0 else None
