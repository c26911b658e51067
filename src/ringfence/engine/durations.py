"""Durations in rule packs: ``30s``, ``10m``, ``1h``, ``7d``."""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
MAX_DURATION_S = 400 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in ``text``. Raises ValueError naming the problem."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number and s/m/h/d/w, e.g. 10m")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(f"duration {text!r} must be more than 0s and at most 400d")
    return seconds
