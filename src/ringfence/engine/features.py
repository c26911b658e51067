"""Keyed streaming features: sliding-window and lifetime aggregates over event time.

A :class:`FeatureSpec` is the definition from the rule pack; per key it keeps a compact
:class:`FeatureState`. Sliding windows are split into ``BUCKETS`` buckets of equal width,
so a window's edge is exact to ``window / BUCKETS``, and state per key is bounded.

``last``, ``first`` and ``time_since`` describe the matching events *before* the current
one (a rule compares the current login's country with the last one); every other
aggregate includes the current event.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from ringfence.engine.expressions import EvalContext, Expression
from ringfence.engine.functions import real
from ringfence.engine.keys import key_of, stable_types

BUCKETS = 60
MAX_DISTINCT = 1_000
DISTINCT_TEXT_MAX = 256  # characters of a distinct value kept as they are: every typed field's text
QUANTILE_SAMPLES = 256


class Aggregation(StrEnum):
    """What a feature computes over its events (``agg`` in a pack)."""

    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    DISTINCT_COUNT = "distinct_count"
    LAST = "last"
    FIRST = "first"
    TIME_SINCE = "time_since"
    STATS = "stats"
    EWMA = "ewma"
    QUANTILE = "quantile"


NEEDS_OF = frozenset(Aggregation) - {Aggregation.COUNT, Aggregation.TIME_SINCE}
# aggregates of numbers: a value that reads as none (a text that is no number, a list) is
# skipped like a missing one, not the event's failure (a producer's one odd value in free-form
# data was poison: the event quarantined, after the processor read its whole state again)
NUMERIC = frozenset(
    {Aggregation.SUM, Aggregation.AVG, Aggregation.MIN, Aggregation.MAX}
    | {Aggregation.STATS, Aggregation.EWMA, Aggregation.QUANTILE}
)
LIFETIME_ONLY = frozenset({Aggregation.EWMA})
WINDOW_ONLY = frozenset({Aggregation.QUANTILE})
# aggregates whose value is read *before* the current event is folded in
READ_BEFORE_UPDATE = frozenset({Aggregation.LAST, Aggregation.FIRST, Aggregation.TIME_SINCE})
# the integers a state can hold (msgpack's). Arithmetic is exact to 2**127, so a kept product of
# two large numbers could be past them: kept as a float, as the core keeps it, or no checkpoint
# could hold its state and the event would be poison
STATE_INT_MIN, STATE_INT_MAX = -(2**63), 2**64 - 1


class FeatureState(msgspec.Struct, array_like=True, gc=False):
    """One key's state of one feature. ``seen`` is the newest event time applied.

    Sliding windows keep per-bucket values in ``buckets`` (and ``counts``/``squares`` for
    avg and stats); lifetime aggregates keep one ``value``.
    """

    seen: float = -math.inf
    buckets: dict[Any, float] | None = None
    counts: dict[int, float] | None = None
    value: Any = None
    at: float | None = None
    squares: dict[int, float] | None = None


@dataclass(frozen=True)
class FeatureSpec:
    """A feature from the rule pack: ``agg`` of ``of`` over ``window`` seconds, per ``by``."""

    name: str
    by: tuple[tuple[str, ...], ...]
    agg: Aggregation
    of: Expression | None
    where: Expression | None
    on: frozenset[str] | None
    window: float | None
    alpha: float = 0.1
    q: float = 0.95
    ttl: float | None = None

    @property
    def state_name(self) -> str:
        return self.name

    @property
    def signature(self) -> tuple[Any, ...]:
        """What defines the state: a reloaded pack keeps the state of a feature with the same one."""
        src = (self.of.source if self.of else None, self.where.source if self.where else None)
        # plain values only: checkpoints name states by a digest of its repr (see persisted_names)
        return (self.by, self.agg.value, *src, stable_types(self.on), self.window, self.alpha, self.q)

    @property
    def width(self) -> float:
        assert self.window is not None
        return self.window / BUCKETS

    def key(self, ctx: EvalContext) -> str | None:
        return key_of(self.by, ctx)

    def applies(self, event_type: str, ctx: EvalContext) -> bool:
        if self.on is not None and event_type not in self.on:
            return False
        return self.where is None or bool(self.where.evaluate(ctx))

    def update(self, state: FeatureState, t: float, ctx: EvalContext) -> None:
        """Fold the current event into ``state`` at time ``t``: the engine's ``event_time_mark``,
        when it happened but never past when it arrived. One dated minutes ahead (a producer's
        clock) would otherwise sit in a shared key's state ahead of every other producer's
        events: its ``last`` and ``time_since`` kept from them, its buckets and distinct values
        out of their windows, and the key's newest time shrinking those windows to seconds."""
        x = self.of.evaluate(ctx) if self.of is not None else None
        if self.agg in NEEDS_OF and x is None:
            return
        if self.agg in NUMERIC:
            try:
                x = real(x)
            except (TypeError, ValueError, OverflowError):
                return
            if x != x and self.agg == Aggregation.QUANTILE:
                # a NaN has no place among ordered samples: it broke their order for good (the
                # compiled core then dropped the smallest sample for it: a hostile test)
                return
        _UPDATE[self.agg](self, state, t, x)
        state.seen = max(state.seen, t)
        # a lifetime distinct count keeps its newest MAX_DISTINCT too: it had no bound, and one
        # customer's 100,000 devices made its state 11 MB, logged whole by each batch (a hostile test)
        if state.buckets is not None and (self.window is not None or self.agg == Aggregation.DISTINCT_COUNT):
            self._prune(state)

    def value(self, state: FeatureState | None, t: float) -> Any:
        """The feature's value as seen by an event at time ``t``."""
        if state is None:
            return 0 if self.agg in (Aggregation.COUNT, Aggregation.SUM, Aggregation.DISTINCT_COUNT) else None
        return _READ[self.agg](self, state, t)

    def expired(self, state: FeatureState, watermark: float) -> bool:
        """True when the key went quiet past the window (or, for lifetime features, the ttl)."""
        horizon = self.window if self.window is not None else self.ttl
        return horizon is not None and state.seen < watermark - horizon

    def _prune(self, state: FeatureState) -> None:
        assert state.buckets is not None
        if self.agg == Aggregation.QUANTILE:
            return
        if self.agg == Aggregation.DISTINCT_COUNT:
            if len(state.buckets) > MAX_DISTINCT:
                oldest = sorted(state.buckets, key=state.buckets.__getitem__)[: len(state.buckets) - MAX_DISTINCT]
                for k in oldest:
                    del state.buckets[k]
            return
        floor = math.floor(state.seen / self.width) - BUCKETS
        if len(state.buckets) > BUCKETS:
            for idx in [i for i in state.buckets if i <= floor]:
                del state.buckets[idx]
                if state.counts is not None:
                    state.counts.pop(idx, None)
                if state.squares is not None:
                    state.squares.pop(idx, None)

    def _window_range(self, state: FeatureState, t: float) -> tuple[int, int]:
        """Bucket indexes (bottom, top] read at time ``t``."""
        top = math.floor(t / self.width)
        # buckets a window behind the newest event are gone by definition, pruned yet or not
        return max(top, math.floor(state.seen / self.width)) - BUCKETS, top

    def _window_buckets(self, state: FeatureState, t: float) -> list[int]:
        bottom, top = self._window_range(state, t)
        assert state.buckets is not None
        return [i for i in state.buckets if bottom < i <= top]


def _in_window(spec: FeatureSpec, t_then: float | None, t: float) -> bool:
    return t_then is not None and (spec.window is None or t - spec.window < t_then <= t)


def _upd_count(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    _add(spec, s, t, 1.0)


def _upd_sum(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    _add(spec, s, t, real(x))


def _add(spec: FeatureSpec, s: FeatureState, t: float, x: float) -> None:
    if spec.window is None:
        s.value = (s.value or 0.0) + x
        return
    if s.buckets is None:
        s.buckets = {}
    idx = math.floor(t / spec.width)
    s.buckets[idx] = s.buckets.get(idx, 0.0) + x


def _upd_avg(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    if spec.window is None:
        total, n = s.value or (0.0, 0)
        s.value = (total + real(x), n + 1)
        return
    _add(spec, s, t, real(x))
    if s.counts is None:
        s.counts = {}
    idx = math.floor(t / spec.width)
    s.counts[idx] = s.counts.get(idx, 0.0) + 1


def _extreme(pick: Callable[[float, float], float]) -> Callable[[FeatureSpec, FeatureState, float, Any], None]:
    def update(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
        x = real(x)
        if spec.window is None:
            s.value = x if s.value is None else pick(s.value, x)
            return
        if s.buckets is None:
            s.buckets = {}
        idx = math.floor(t / spec.width)
        s.buckets[idx] = x if idx not in s.buckets else pick(s.buckets[idx], x)

    return update


def distinct_key(x: Any) -> str:
    """What a distinct count keeps of value ``x``: its text, or past :data:`DISTINCT_TEXT_MAX`
    characters the text's SHA-256 (both engines): a free-form field of 60 KB values made a
    1,000-value state of 60 MB, rewritten whole by each event (a hostile test)."""
    text = str(x)
    if len(text) <= DISTINCT_TEXT_MAX:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _upd_distinct(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    if s.buckets is None:
        s.buckets = {}
    # distinct values keyed by their text; the value is when each was last seen
    key = distinct_key(x)
    s.buckets[key] = max(t, s.buckets.get(key, -math.inf))


def _storable(x: Any) -> Any:
    """``x`` as a state keeps it: an integer past what a state holds as a float, a list
    literal's too."""
    if x.__class__ is int:
        if STATE_INT_MIN <= x <= STATE_INT_MAX:
            return x
        try:
            return float(x)
        except OverflowError:  # a list literal of hundreds of digits
            return math.inf if x > 0 else -math.inf
    if x.__class__ is frozenset and any(m.__class__ is int and not STATE_INT_MIN <= m <= STATE_INT_MAX for m in x):
        return frozenset(map(_storable, x))
    return x


def _upd_last(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    if s.at is None or t >= s.at:
        s.value, s.at = _storable(x), t


def _upd_first(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    if s.at is None or t < s.at:
        s.value, s.at = _storable(x), t


def _upd_time_since(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    if s.at is None or t >= s.at:
        s.at = t


def _read_sum(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
    if spec.window is None:
        total = s.value or 0
        return int(total) if spec.agg == Aggregation.COUNT else total
    if s.buckets is None:
        return 0
    bottom, top = spec._window_range(s, t)
    total = sum(v for i, v in s.buckets.items() if bottom < i <= top)
    return int(total) if spec.agg == Aggregation.COUNT else total


def _read_avg(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
    if spec.window is None:
        if not s.value:
            return None
        total, n = s.value
        return total / n if n else None
    if s.buckets is None or s.counts is None:
        return None
    idxs = spec._window_buckets(s, t)
    n = sum(s.counts.get(i, 0.0) for i in idxs)
    return sum(s.buckets[i] for i in idxs) / n if n else None


def _read_extreme(pick: Callable[..., float]) -> Callable[[FeatureSpec, FeatureState, float], Any]:
    def read(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
        if spec.window is None:
            return s.value
        if not s.buckets:
            return None
        values = [s.buckets[i] for i in spec._window_buckets(s, t)]
        return pick(values) if values else None

    return read


def _read_distinct(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
    if not s.buckets:
        return 0
    if spec.window is None:
        return len(s.buckets)
    return sum(1 for seen in s.buckets.values() if t - spec.window < seen <= t)


def _read_previous(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
    return s.value if _in_window(spec, s.at, t) else None


def _read_time_since(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
    return t - s.at if _in_window(spec, s.at, t) and s.at is not None else None


def _upd_stats(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    x = real(x)
    if spec.window is None:  # Welford's running mean and variance
        n, mean, m2 = s.value or (0, 0.0, 0.0)
        n += 1
        delta = x - mean
        mean += delta / n
        s.value = (n, mean, m2 + delta * (x - mean))
        return
    _upd_avg(spec, s, t, x)
    if s.squares is None:
        s.squares = {}
    idx = math.floor(t / spec.width)
    s.squares[idx] = s.squares.get(idx, 0.0) + x * x


def _upd_ewma(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    s.value = real(x) if s.value is None else spec.alpha * real(x) + (1 - spec.alpha) * s.value


def _upd_quantile(spec: FeatureSpec, s: FeatureState, t: float, x: Any) -> None:
    # the newest samples: times and values in arrival order, and the values sorted
    empty: tuple[list[float], list[float], list[float]] = ([], [], [])
    times, values, ordered = s.value or empty
    times.append(t)
    values.append(real(x))
    bisect.insort(ordered, real(x))
    if len(times) > QUANTILE_SAMPLES:
        del times[0]
        ordered.pop(bisect.bisect_left(ordered, values.pop(0)))
    s.value = (times, values, ordered)


def _read_stats(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
    if spec.window is None:
        if not s.value:
            return None
        n, mean, m2 = s.value
        return {"count": n, "mean": mean, "std": _sqrt(m2 / (n - 1)) if n > 1 else 0.0}
    if s.buckets is None or s.counts is None or s.squares is None:
        return None
    idxs = spec._window_buckets(s, t)
    n = sum(s.counts.get(i, 0.0) for i in idxs)
    if not n:
        return None
    total = sum(s.buckets[i] for i in idxs)
    squares = sum(s.squares.get(i, 0.0) for i in idxs)
    mean = total / n
    var = max(0.0, (squares - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return {"count": int(n), "mean": mean, "std": math.sqrt(var)}


def _sqrt(x: float) -> float:
    """The core's square root: nan below zero (values near the largest float can take a running
    variance there), where ``math.sqrt`` raises, and the key's every later read with it."""
    return math.sqrt(x) if x >= 0 else math.nan


def _read_ewma(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
    return s.value


def _read_quantile(spec: FeatureSpec, s: FeatureState, t: float) -> Any:
    if not s.value:
        return None
    assert spec.window is not None
    times, values, ordered = s.value
    if t - spec.window < min(times) and max(times) <= t:
        inside = ordered  # every kept sample is in the window: the usual case, no sorting
    else:
        inside = sorted(v for ti, v in zip(times, values, strict=True) if t - spec.window < ti <= t)
    if not inside:
        return None
    return inside[min(len(inside) - 1, int(spec.q * len(inside)))]


_UPDATE: dict[Aggregation, Callable[[FeatureSpec, FeatureState, float, Any], None]] = {
    Aggregation.COUNT: _upd_count,
    Aggregation.SUM: _upd_sum,
    Aggregation.AVG: _upd_avg,
    Aggregation.MIN: _extreme(min),
    Aggregation.MAX: _extreme(max),
    Aggregation.DISTINCT_COUNT: _upd_distinct,
    Aggregation.LAST: _upd_last,
    Aggregation.FIRST: _upd_first,
    Aggregation.TIME_SINCE: _upd_time_since,
    Aggregation.STATS: _upd_stats,
    Aggregation.EWMA: _upd_ewma,
    Aggregation.QUANTILE: _upd_quantile,
}
_READ: dict[Aggregation, Callable[[FeatureSpec, FeatureState, float], Any]] = {
    Aggregation.COUNT: _read_sum,
    Aggregation.SUM: _read_sum,
    Aggregation.AVG: _read_avg,
    Aggregation.MIN: _read_extreme(min),
    Aggregation.MAX: _read_extreme(max),
    Aggregation.DISTINCT_COUNT: _read_distinct,
    Aggregation.LAST: _read_previous,
    Aggregation.FIRST: _read_previous,
    Aggregation.TIME_SINCE: _read_time_since,
    Aggregation.STATS: _read_stats,
    Aggregation.EWMA: _read_ewma,
    Aggregation.QUANTILE: _read_quantile,
}

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(FeatureState)


def encode_state(state: FeatureState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(raw: bytes) -> FeatureState:
    return _state_decoder.decode(raw)
