"""The live alert feed between dispatch and the api processes, on a real PostgreSQL: a row
numbered before one already read, committed later by another dispatch service, is still
shown, once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ringfence.runtimes.kafka.alert_feed import GAP_PATIENCE_S, MAX_GAPS, FeedFollower, FeedWriter
from ringfence.store.sql import SqlStore


class Recorder:
    subscribers = 1

    def __init__(self) -> None:
        self.shown: list[Any] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.shown.append(event["n"])


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def feed(make_pg_store: Callable[..., SqlStore]) -> tuple[SqlStore, Recorder, Clock, FeedFollower]:
    store, shown, clock = make_pg_store(), Recorder(), Clock()
    follower = FeedFollower(store, shown, clock)  # type: ignore[arg-type]
    follower.follow()  # finds where the feed ends
    return store, shown, clock, follower


def numbered(store: SqlStore, seq: int) -> None:
    """A row with the number PostgreSQL handed out, as the dispatch that drew it commits it."""
    store.conn().execute("INSERT INTO alert_feed (seq, at, event) VALUES (?, ?, ?)", (seq, 0.0, f'{{"n": {seq}}}'))


def test_rows_written_after_the_follower_began_are_shown_in_order(feed: Any) -> None:
    store, shown, _, follower = feed
    writer = FeedWriter(store)
    for n in range(3):
        writer.publish({"n": n})
    follower.follow()
    assert shown.shown == [0, 1, 2]
    follower.follow()
    assert shown.shown == [0, 1, 2]  # once


def test_a_row_committed_after_a_later_one_was_read_is_still_shown_once(feed: Any) -> None:
    store, shown, clock, follower = feed
    numbered(store, 2)  # another dispatch drew 1 first, and has not committed it yet
    follower.follow()
    assert shown.shown == [2]
    clock.now += GAP_PATIENCE_S / 2
    numbered(store, 1)
    numbered(store, 3)
    follower.follow()
    assert shown.shown == [2, 1, 3]
    follower.follow()
    assert shown.shown == [2, 1, 3]


def test_a_number_never_committed_is_given_up_after_the_patience(feed: Any) -> None:
    store, shown, clock, follower = feed
    numbered(store, 5)  # 1-4 skipped: a rolled-back insert leaves its number unused for good
    follower.follow()
    clock.now += GAP_PATIENCE_S + 1
    follower.follow()
    numbered(store, 3)  # too late: a live view does not wait for ever
    follower.follow()
    assert shown.shown == [5]


def test_a_long_run_of_skipped_numbers_is_looked_for_only_at_its_newest_end(feed: Any) -> None:
    store, shown, _, follower = feed
    numbered(store, MAX_GAPS + 10)  # 1 .. MAX_GAPS + 9 skipped: a rolled-back burst, say
    follower.follow()
    numbered(store, 5)  # older than the run looked for
    numbered(store, MAX_GAPS + 5)
    follower.follow()
    assert shown.shown == [MAX_GAPS + 10, MAX_GAPS + 5]
