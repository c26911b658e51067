"""The functions rule expressions may call. Nothing outside this table is callable."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

EARTH_RADIUS_KM = 6371.0088


def distance_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> float | None:
    """Great-circle distance in km between two points; None if any coordinate is missing."""
    if None in (lat1, lon1, lat2, lon2):
        return None
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def hours_between(t1: Any, t2: Any) -> float | None:
    """Absolute hours between two epoch-second timestamps; None if either is missing."""
    if t1 is None or t2 is None:
        return None
    return abs(float(t2) - float(t1)) / 3600.0


def _num(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        if any(a is None for a in args):
            return None
        return fn(*args)

    return wrapped


def _coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


def _text(fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda s: fn(s) if isinstance(s, str) else None


# name -> (callable, min args, max args)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "abs": (_num(abs), 1, 1),
    "min": (_num(min), 2, 8),
    "max": (_num(max), 2, 8),
    "round": (_num(lambda x, n=0: round(x, int(n))), 1, 2),
    "lower": (_text(str.lower), 1, 1),
    "upper": (_text(str.upper), 1, 1),
    "len": (_text(len), 1, 1),
    "startswith": (lambda s, p: s.startswith(p) if isinstance(s, str) and isinstance(p, str) else False, 2, 2),
    "coalesce": (_coalesce, 1, 8),
    "distance_km": (distance_km, 4, 4),
    "hours_between": (hours_between, 2, 2),
}
