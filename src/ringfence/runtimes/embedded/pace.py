"""How many events a second the processor gets through while it works: backpressure's measure
of how long what waits will take (:meth:`ringfence.runtimes.embedded.platform.Platform.wait_s`).

Measured over the processor's busy time only (its steps that processed events), so it is known
from the first batches of a burst, not once the processor has been behind a while: events of
one key taken at 40,000 a second were 44,000 ahead before a rate over a second of being behind
said anything (a re-test).
"""

from __future__ import annotations

import threading

# what came before a step weighs half as much after each HALF_LIFE_S of busy time: a second of
# costly events outweighs many cheap batches before it (decayed a step at a time, by 0.9, full
# batches of cheap events kept the pace twice too high through many costly ones, and a burst
# after them was taken until 30-50 s waited: a re-test)
HALF_LIFE_S = 0.5
# steps of fewer events are not measured: a few events a step (the processor keeping up) go at
# the pace of its fixed costs, a fraction of what it does behind, and a burst after a quiet
# while read as tens of seconds of wait, and was refused
MIN_STEP_EVENTS = 1_000


class Pace:
    """Events a second of the processor's busy time, of its recent steps. Added to by the
    processor's thread, read by ingest's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events = 0.0
        self._seconds = 0.0
        self._last: float | None = None  # the last step's

    def add(self, events: int, seconds: float) -> None:
        """A step processed ``events`` in ``seconds`` (counted if at least MIN_STEP_EVENTS)."""
        if events < MIN_STEP_EVENTS:
            return
        with self._lock:
            keep = 0.5 ** (seconds / HALF_LIFE_S)
            self._events = self._events * keep + events
            self._seconds = self._seconds * keep + seconds
            self._last = events / seconds if seconds > 0 else None

    def rate(self) -> float | None:
        """Events a second, or None before any step was measured: of the recent steps, or of
        the last one if slower (what waits is mostly behind the last step's kind of events)."""
        with self._lock:
            if self._seconds <= 0 or self._events <= 0:
                return None
            recent = self._events / self._seconds
            return min(recent, self._last) if self._last else recent
