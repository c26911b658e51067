"""The functions rule expressions may call. Nothing outside this table is callable."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringfence.engine.schema import ANY, BOOL, NUMBER, STRING

EARTH_RADIUS_KM = 6371.0088


def distance_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> float | None:
    """Great-circle distance in km between two points; None if any coordinate is missing."""
    if None in (lat1, lon1, lat2, lon2):
        return None
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def real(x: Any) -> float:
    """``float(x)`` as the compiled core reads it: a text's digits are ASCII ones (Python also
    reads other scripts' digits, ``'١٢'``, which the core refuses: the engines would differ)."""
    if x.__class__ is str and not x.strip().isascii():
        raise ValueError(f"could not convert string to float: {x!r}")
    return float(x)


def hours_between(t1: Any, t2: Any) -> float | None:
    """Absolute hours between two epoch-second timestamps; None if either is missing."""
    if t1 is None or t2 is None:
        return None
    return abs(real(t2) - real(t1)) / 3600.0


def _nullable(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        return None if any(a is None for a in args) else fn(*args)

    return wrapped


def _coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


def _text(fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda s: fn(s) if isinstance(s, str) else None


def _round(x: float, n: Any = 0) -> float:
    if n.__class__ is str and not n.strip().isascii():  # as real(): ASCII digits only
        raise ValueError(f"invalid literal for int(): {n!r}")
    digits = int(n)
    if n.__class__ is str and not -(2**63) <= digits < 2**63:  # the core reads a text's digits in 64 bits
        raise ValueError(f"int() of {len(n)} characters past 64 bits")
    return round(x, max(0, min(12, digits)))


def _abs(x: float) -> float:
    """``abs``, within the integers arithmetic holds: abs(-2**127) is 2**127, one past them,
    so a float, as the core makes it (a hostile test: the two engines' next ``%`` differed)."""
    result = abs(x)
    return float(result) if result.__class__ is int and result >= 2**127 else result


@dataclass(frozen=True)
class Function:
    """A callable with its argument types (the last one repeats up to ``max_args``) and result type."""

    fn: Callable[..., Any]
    args: tuple[str, ...]
    result: str
    min_args: int
    max_args: int


FUNCTIONS: dict[str, Function] = {
    "abs": Function(_nullable(_abs), (NUMBER,), NUMBER, 1, 1),
    "min": Function(_nullable(min), (NUMBER,), NUMBER, 2, 8),
    "max": Function(_nullable(max), (NUMBER,), NUMBER, 2, 8),
    "round": Function(_nullable(_round), (NUMBER, NUMBER), NUMBER, 1, 2),
    "lower": Function(_text(str.lower), (STRING,), STRING, 1, 1),
    "upper": Function(_text(str.upper), (STRING,), STRING, 1, 1),
    "len": Function(_text(len), (STRING,), NUMBER, 1, 1),
    "startswith": Function(
        lambda s, p: s.startswith(p) if isinstance(s, str) and isinstance(p, str) else False,
        (STRING, STRING),
        BOOL,
        2,
        2,
    ),
    "coalesce": Function(_coalesce, (ANY,), ANY, 1, 8),
    "distance_km": Function(distance_km, (NUMBER, NUMBER, NUMBER, NUMBER), NUMBER, 4, 4),
    "hours_between": Function(hours_between, (NUMBER, NUMBER), NUMBER, 2, 2),
}
