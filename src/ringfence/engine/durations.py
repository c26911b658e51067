"""Durations in rule packs: ``30s``, ``10m``, ``1h``, ``7d``."""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
MIN_DURATION_S = 1.0
MAX_DURATION_S = 400 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in ``text``. Raises ValueError naming the problem."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number and s/m/h/d/w, e.g. 10m")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    # not just above 0: a window of a nanosecond numbered its buckets past 2**64 (the reference
    # engine's checkpoint failed on every event; the compiled core's saturated: a hostile test)
    if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:
        raise ValueError(f"duration {text!r} must be between 1s and 400d")
    return seconds
