"""Windowed and lifetime aggregates per key, in event time."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.engine.expressions import DictContext, Scope, compile_expression
from ringfence.engine.features import BUCKETS, Aggregation, FeatureSpec, FeatureState, decode_state, encode_state

SCOPE = Scope(None, frozenset(), frozenset())


def spec(agg: str, window: float | None = 600.0, of: str | None = "data.amount") -> FeatureSpec:
    expr = compile_expression(of, SCOPE) if of else None
    return FeatureSpec("f", (("customer_id",),), Aggregation(agg), expr, None, None, window)


def feed(s: FeatureSpec, points: list[tuple[float, Any]]) -> FeatureState:
    state = FeatureState()
    for t, x in points:
        s.update(state, t, DictContext({"customer_id": "c", "data": {"amount": x}}))
    return state


@pytest.mark.parametrize(
    ("agg", "points", "at", "expected"),
    [
        ("count", [(0, 1), (10, 1), (20, 1)], 20, 3),
        ("sum", [(0, 5.0), (10, 7.5)], 10, 12.5),
        ("avg", [(0, 10.0), (10, 20.0)], 10, 15.0),
        ("min", [(0, 10.0), (10, 3.0), (20, 8.0)], 20, 3.0),
        ("max", [(0, 10.0), (10, 3.0)], 10, 10.0),
        ("distinct_count", [(0, "FR"), (10, "DE"), (20, "FR")], 20, 2),
        # a sliding window forgets what fell out of it
        ("count", [(0, 1), (700, 1)], 700, 1),
        ("sum", [(0, 5.0), (599, 1.0)], 599, 6.0),
        ("sum", [(0, 5.0), (611, 1.0)], 611, 1.0),
        ("distinct_count", [(0, "FR"), (700, "DE")], 700, 1),
        ("max", [(0, 99.0), (700, 1.0)], 700, 1.0),
        # out of order within the window still counts
        ("count", [(100, 1), (50, 1), (120, 1)], 120, 3),
        # reading at an earlier time does not see later buckets
        ("count", [(0, 1), (300, 1)], 100, 1),
    ],
)
def test_windowed_aggregates(agg: str, points: list[tuple[float, Any]], at: float, expected: Any) -> None:
    s = spec(agg, of=None if agg == "count" else "data.amount")
    assert s.value(feed(s, points), at) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("agg", "expected"),
    [("count", 3), ("sum", 16.0), ("avg", 16 / 3), ("min", 1.0), ("max", 10.0)],
)
def test_lifetime_aggregates_never_forget(agg: str, expected: Any) -> None:
    s = spec(agg, window=None, of=None if agg == "count" else "data.amount")
    state = feed(s, [(0, 5.0), (10**7, 10.0), (2 * 10**7, 1.0)])
    assert s.value(state, 2 * 10**7) == pytest.approx(expected)


def test_last_first_and_time_since_describe_earlier_events() -> None:
    last, first, since = spec("last", None), spec("first", None), spec("time_since", None, of=None)
    state_last = feed(last, [(0, 1.0), (10, 2.0), (5, 9.0)])  # a late event does not become "last"
    assert last.value(state_last, 20) == 2.0
    assert first.value(feed(first, [(10, 2.0), (0, 1.0)]), 20) == 1.0
    assert since.value(feed(since, [(0, None), (30, None)]), 45) == 15


def test_windowed_last_is_forgotten_after_the_window() -> None:
    s = spec("last", window=60)
    state = feed(s, [(0, 1.0)])
    assert s.value(state, 30) == 1.0
    assert s.value(state, 61) is None


def test_empty_state_reads_zero_for_counts_and_none_otherwise() -> None:
    assert spec("count", of=None).value(None, 0) == 0
    assert spec("avg").value(None, 0) is None


def test_state_stays_bounded_and_expires() -> None:
    s = spec("count", window=60, of=None)
    state = feed(s, [(t, 1) for t in range(0, 10_000, 1)])
    assert state.buckets is not None
    assert len(state.buckets) <= BUCKETS + 1
    assert not s.expired(state, watermark=10_000)
    assert s.expired(state, watermark=10_000 + 61)


def test_state_round_trips_through_its_encoding() -> None:
    s = spec("distinct_count")
    state = feed(s, [(0, "FR"), (1, "DE")])
    assert s.value(decode_state(encode_state(state)), 1) == 2


def test_stats_give_mean_std_and_count() -> None:
    windowed, lifetime = spec("stats"), spec("stats", window=None)
    points = [(0, 10.0), (10, 20.0), (20, 30.0)]
    for s in (windowed, lifetime):
        value = s.value(feed(s, points), 20)
        assert value["count"] == 3
        assert value["mean"] == pytest.approx(20.0)
        assert value["std"] == pytest.approx(10.0)
    assert windowed.value(feed(windowed, [(0, 10.0), (700, 20.0)]), 700)["count"] == 1


def test_ewma_weights_recent_values() -> None:
    s = FeatureSpec("f", (), Aggregation.EWMA, compile_expression("data.amount", SCOPE), None, None, None, alpha=0.5)
    assert s.value(feed(s, [(0, 10.0), (1, 20.0), (2, 20.0)]), 2) == pytest.approx(17.5)


@pytest.mark.parametrize(("q", "expected"), [(0.5, 51.0), (0.95, 96.0), (0.99, 100.0)])
def test_quantile_over_the_window(q: float, expected: float) -> None:
    s = FeatureSpec("f", (), Aggregation.QUANTILE, compile_expression("data.amount", SCOPE), None, None, 600.0, q=q)
    state = feed(s, [(i, float(i + 1)) for i in range(100)])
    assert s.value(state, 99) == expected


def test_quantile_forgets_samples_outside_the_window() -> None:
    s = FeatureSpec("f", (), Aggregation.QUANTILE, compile_expression("data.amount", SCOPE), None, None, 60.0, q=0.5)
    assert s.value(feed(s, [(0, 1000.0), (100, 5.0)]), 100) == 5.0


@pytest.mark.parametrize(
    ("read_at", "expected"),
    [(0, 1), (599, 1), (599.99, 1), (600, 0), (601, 0)],  # an event exactly one window old is out
)
def test_window_edges_at_bucket_boundaries(read_at: float, expected: int) -> None:
    s = spec("count", of=None)  # 600 s window, 10 s buckets
    assert s.value(feed(s, [(0, 1)]), read_at) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=3000, allow_nan=False), min_size=1, max_size=80), st.floats(0, 3000))
def test_windowed_count_is_exact_to_the_bucket_whatever_the_order(times: list[float], at: float) -> None:
    s = spec("count", of=None)
    state = feed(s, [(t, 1) for t in times])
    width = 600 / 60
    top = math.floor(at / width)
    kept = [t for t in times if math.floor(t / width) > max(top, math.floor(max(times) / width)) - 60]
    expected = sum(1 for t in kept if math.floor(t / width) <= top)
    assert s.value(state, at) == expected
