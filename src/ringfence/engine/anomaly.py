"""Anomaly scores, usable in rules like features.

``robust_zscore``: how far the current value lies from the key's own recent history, in
robust standard deviations (median and MAD of the last ``samples`` values, so one past
outlier does not hide the next). ``half_space_trees``: River's online Half-Space Trees
over several numeric inputs, one model for all keys; needs ``pip install ringfence[ml]``.
Scores are computed from history *before* the current event is learnt.
"""

from __future__ import annotations

import importlib.util
import pickle  # nosec B403
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from ringfence.engine.expressions import EvalContext, Expression
from ringfence.engine.keys import key_of, stable_types
from ringfence.errors import RulePackError

MAX_Z = 99.0
MAD_TO_SIGMA = 1.4826


class AnomalyKind(StrEnum):
    """How an anomaly score is computed (``kind`` in a pack)."""

    ROBUST_ZSCORE = "robust_zscore"
    HALF_SPACE_TREES = "half_space_trees"


@dataclass(frozen=True)
class AnomalySpec:
    """An anomaly score from the rule pack; its ``name`` reads like a feature in rules."""

    name: str
    kind: AnomalyKind
    by: tuple[tuple[str, ...], ...]
    inputs: tuple[Expression, ...]
    where: Expression | None
    on: frozenset[str] | None
    min_samples: int = 10
    samples: int = 32
    window: float | None = None  # forget a key quiet for this long

    @property
    def state_name(self) -> str:
        return f"anomaly:{self.name}"

    @property
    def signature(self) -> tuple[Any, ...]:
        """What defines the state: a reloaded pack keeps the state of an anomaly with the same one."""
        where = self.where.source if self.where else None
        inputs = tuple(i.source for i in self.inputs)
        # plain values only: checkpoints name states by a digest of its repr (see persisted_names)
        return (self.kind.value, self.by, inputs, where, stable_types(self.on), self.samples)

    def applies(self, event_type: str, ctx: EvalContext) -> bool:
        if self.on is not None and event_type not in self.on:
            return False
        return self.where is None or bool(self.where.evaluate(ctx))

    def key(self, ctx: EvalContext) -> str | None:
        return key_of(self.by, ctx)


class ZState(msgspec.Struct, array_like=True, gc=False):
    """The last values of one key, oldest first."""

    seen: float
    values: list[float] = []


def _fsum_unchecked(values: list[float]) -> float:
    """``math.fsum`` without its checks, as the core sums: past the largest float the sum is
    what the arithmetic makes of it (inf or nan), where ``fsum`` raises OverflowError. A raise
    here failed every later event of the key (the value that made it is in the history)."""
    partials: list[float] = []
    for x in values:
        i = 0
        for y in list(partials):
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        del partials[i:]
        partials.append(x)
    n, hi, lo = len(partials), 0.0, 0.0
    if n > 0:
        n -= 1
        hi = partials[n]
        while n > 0:
            x = hi
            n -= 1
            y = partials[n]
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            if y == x - hi:
                hi = x
    return hi


def robust_z(history: list[float], x: float) -> float:
    """Robust z-score of ``x`` against ``history`` (capped at +-MAX_Z)."""
    median = statistics.median(history)
    mad = statistics.median(abs(v - median) for v in history) * MAD_TO_SIGMA
    if mad == 0:
        deviations = [abs(v - median) for v in history]
        try:
            mad = statistics.fmean(deviations) * 1.2533
        except OverflowError:  # deviations past the largest float
            mad = _fsum_unchecked(deviations) / len(deviations) * 1.2533
    if mad == 0:
        return 0.0 if x == median else (MAX_Z if x > median else -MAX_Z)
    return max(-MAX_Z, min(MAX_Z, (x - median) / mad))


def score_zscore(spec: AnomalySpec, state: ZState, x: float, t: float) -> float | None:
    """Score ``x`` against the key's history, then remember it."""
    score = robust_z(state.values, x) if len(state.values) >= spec.min_samples else None
    state.values.append(x)
    del state.values[: -spec.samples]
    state.seen = max(state.seen, t)
    return score


RIVER_MISSING = "half_space_trees needs River: pip install 'ringfence[ml]'"


def require_river() -> None:
    """RulePackError naming the extra to install if River is missing; River is not imported (two
    seconds of a pack check's request, on its first half_space_trees, where it was)."""
    if importlib.util.find_spec("river") is None:
        raise RulePackError(RIVER_MISSING)


def require_models(anomalies: Iterable[AnomalySpec]) -> None:
    """RulePackError if a model of ``anomalies`` cannot be built (River there but failing to
    import): before a pack is stored, so that no runtime stores one its engine cannot build."""
    if any(a.kind == AnomalyKind.HALF_SPACE_TREES for a in anomalies):
        HalfSpaceTrees()


class HalfSpaceTrees:
    """A River Half-Space Trees model behind min-max scaling (scores in [0, 1])."""

    def __init__(self, seed: int = 42) -> None:
        try:
            from river import anomaly, compose, preprocessing
        except Exception as exc:  # missing, or there and broken (a binary built for another numpy)
            raise RulePackError(f"{RIVER_MISSING} (importing it failed: {exc})") from None
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(n_trees=10, height=6, window_size=250, seed=seed)
        )
        self.learnt = 0

    def score_and_learn(self, x: dict[str, float], min_samples: int) -> float | None:
        score = float(self.model.score_one(x)) if self.learnt >= min_samples else None
        self.model.learn_one(x)
        self.learnt += 1
        return score

    def dumps(self) -> bytes:
        # the model is Ringfence's own state, written to and read from its own store only
        return pickle.dumps(self)

    @staticmethod
    def loads(raw: bytes) -> HalfSpaceTrees:
        model = pickle.loads(raw)  # nosec B301 # noqa: S301 - our own checkpoint, never external input
        assert isinstance(model, HalfSpaceTrees)
        return model


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ZState)


def encode_zstate(state: ZState) -> bytes:
    return _encoder.encode(state)


def decode_zstate(raw: bytes) -> ZState:
    return _decoder.decode(raw)


def inputs_of(spec: AnomalySpec, ctx: EvalContext) -> dict[str, float] | None:
    """The numeric inputs of ``spec`` for this event, or None if one is missing."""
    out: dict[str, Any] = {}
    for i, expr in enumerate(spec.inputs):
        value = expr.evaluate(ctx)
        # a NaN is no measurement: in a robust z-score's history it made every later score 99
        # here and an ordinary one in the compiled core (a hostile test)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return None
        out[f"x{i}"] = float(value)
    return out
