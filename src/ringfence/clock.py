"""Clocks. Logic never calls ``now()`` itself: it is handed a :class:`Clock`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time source; ``time()`` is seconds since the epoch (UTC)."""

    def time(self) -> float: ...


class SystemClock:
    """The real wall clock."""

    def time(self) -> float:
        return time.time()


def to_datetime(seconds: float) -> datetime:
    """Seconds since the epoch to an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def iso(seconds: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC with milliseconds."""
    return to_datetime(seconds).isoformat(timespec="milliseconds").replace("+00:00", "Z")
