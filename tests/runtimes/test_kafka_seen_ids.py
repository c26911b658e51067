"""A stage task's seen event ids: forgotten by arrival, and never more than a bound."""

from __future__ import annotations

import gc
import logging

import pytest

from ringfence.runtimes.kafka.seen import SeenIds, event_key


def _batch(seen: SeenIds, name: str, ids: range, at: float) -> None:
    for i in ids:
        assert seen.add(event_key("app", f"e{i}"), at)
    seen.changelog(name)


def test_ids_are_forgotten_a_window_after_their_batch_newest_arrival() -> None:
    seen = SeenIds()
    _batch(seen, "1", range(0, 3), 100.0)
    _batch(seen, "2", range(3, 6), 200.0)
    seen.expire(arrived=350.0, window=300.0)
    assert not seen.add(event_key("app", "e0"), 351.0)  # 100 is within 300 of 350
    seen.expire(arrived=450.0, window=300.0)
    assert seen.dropped == ["1"]
    assert seen.add(event_key("app", "e1"), 451.0)  # forgotten: a retry now counts again
    assert not seen.add(event_key("app", "e4"), 451.0)


def test_a_flood_forgets_the_oldest_batches_beyond_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    seen = SeenIds(max_ids=10)
    _batch(seen, "9", range(0, 4), 300.0)  # the newest names are not the newest arrivals
    _batch(seen, "10", range(4, 8), 100.0)
    _batch(seen, "11", range(8, 12), 200.0)
    with caplog.at_level(logging.WARNING):
        seen.expire(arrived=300.0, window=3600.0)
    assert len(seen.ids) == 8
    assert seen.dropped == ["10"]  # the oldest arrivals, whatever their name
    assert "4 event ids forgotten" in caplog.text
    assert not seen.add(event_key("app", "e0"), 301.0)
    assert not seen.add(event_key("app", "e11"), 301.0)
    assert seen.add(event_key("app", "e5"), 301.0)
    # the changelog tombstones what was forgotten, so a restore holds no more than the bound
    records = dict(seen.changelog("12"))
    assert records["10"] is None
    restored = SeenIds.restore(dict(seen.rows()))
    assert len(restored.ids) == 9


def test_within_the_bound_nothing_is_forgotten_early(caplog: pytest.LogCaptureFixture) -> None:
    seen = SeenIds(max_ids=6)
    _batch(seen, "1", range(0, 3), 100.0)
    _batch(seen, "2", range(3, 6), 110.0)
    with caplog.at_level(logging.WARNING):
        seen.expire(arrived=120.0, window=3600.0)
    assert seen.dropped == []
    assert len(seen.ids) == 6
    assert "forgotten" not in caplog.text


def test_an_hour_of_ids_gives_the_garbage_collector_nothing_to_walk() -> None:
    """A task keeps a record of ids a commit for the dedup window (an hour: ~10^6 at 2,000
    events/s); each was a list in a tuple, objects every full collection walks, so a worker at
    steady state paused for seconds. Texts in tuples are untracked once collected."""
    gc.collect()
    before = len(gc.get_objects())
    seen = SeenIds()
    for n in range(5_000):
        _batch(seen, str(n), range(n * 3, n * 3 + 3), float(n))
    restored = SeenIds.restore(dict(seen.rows()))
    gc.collect()
    assert len(gc.get_objects()) - before < 500  # it was 20,000: 4 objects a batch
    assert len(restored.ids) == len(seen.ids) == 15_000
    assert not restored.add(event_key("app", "e14999"), 9_999.0)
