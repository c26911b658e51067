"""Event time as every runtime moves it: idle wall-clock timers and the expiry of quiet keys.

Each partition's watermark is its newest event time minus the allowed lateness (the engine
keeps it), and absence timers fire when it passes their deadline. A partition no record
reaches would keep its watermark for ever, so once nothing came for the allowed lateness,
event time runs on with the wall clock: from the newest event time, by the wall-clock time
since the newest record arrived. A replay of old events is thus not closed early by today's
clock, and a busy partition fires its timers on event time alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ringfence.engine.engine import Engine
from ringfence.engine.rules import AlertSignal

IDLE_EVERY_S = 1.0  # how often quiet engines let event time run on
EXPIRE_EVERY_S = 30.0  # how often the state of quiet keys is dropped


@dataclass
class EventClock:
    """When an engine last took a record, and when the newest record it took arrived."""

    taken_at: float = 0.0  # wall clock
    arrived_at: float = 0.0  # wall clock of the newest record's arrival in the log (its ingest)

    def took(self, now: float, arrived_at: float | None = None) -> None:
        """A record was taken at ``now``; one that came to stay (not a retry) arrived at ``arrived_at``."""
        self.taken_at = now
        if arrived_at is not None:
            self.arrived_at = arrived_at

    def idle_watermark(self, marks: Mapping[int, float], now: float, lateness: float) -> float | None:
        """The watermark at ``now`` of an engine whose partitions' newest event times are
        ``marks``; None while records still come (within ``lateness``), or before the first."""
        if not marks or now - self.taken_at < lateness:
            return None
        return max(marks.values()) + (now - self.arrived_at) - lateness

    def fire_idle(self, engine: Engine, now: float) -> list[AlertSignal]:
        """Fire the absence timers of ``engine`` the wall clock made due."""
        if not len(engine.timers):
            return []
        mark = self.idle_watermark(engine.max_event_time, now, engine.allowed_lateness_s)
        return engine.advance(mark) if mark is not None else []


def expiry_watermark(marks: Mapping[int, float], now: float, lateness: float) -> float | None:
    """Event time before which a quiet key's state may go: the slowest partition's watermark,
    never past the wall clock's (events minutes ahead must not expire other keys early)."""
    return min(*marks.values(), now) - lateness if marks else None


def expire(engine: Engine, now: float) -> float | None:
    """Drop the state of ``engine``'s quiet keys; return the watermark used (None: nothing seen)."""
    mark = expiry_watermark(engine.max_event_time, now, engine.allowed_lateness_s)
    if mark is not None:
        engine.expire(mark)
    return mark


@dataclass
class Cadence:
    """Something done every ``every_s`` seconds of wall clock."""

    every_s: float
    last: float = -math.inf

    def due(self, now: float) -> bool:
        """True (and counted as done) once ``every_s`` passed since the last time."""
        if now - self.last < self.every_s:
            return False
        self.last = now
        return True
