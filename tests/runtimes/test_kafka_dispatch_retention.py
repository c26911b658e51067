"""The kafka runtime's dispatch service forgets late events once the events topic no longer
holds what they point at, a slice at a time, and a failure of it never stops dispatching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ringfence.runtimes.kafka import dispatch
from ringfence.runtimes.kafka.topics import EVENTS_KEPT_S
from ringfence.store import Checkpoint, SqliteStore
from ringfence.store.base import LateEvent
from ringfence.testing import FixedClock

NOW = 2_000_000_000.0


class Stepper:
    """What the service asks of its dispatcher here: the clock."""

    def __init__(self) -> None:
        self.clock = FixedClock(NOW)


def service(store: Any) -> dispatch.DispatchService:
    made = dispatch.DispatchService.__new__(dispatch.DispatchService)  # no broker: no consumer
    made.store = store
    made.dispatcher = Stepper()  # what it reads of a Dispatcher
    return made


def test_late_events_older_than_the_events_topic_are_forgotten_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "RETENTION_ROWS", 2)
    store = SqliteStore(tmp_path / "s.db")
    try:
        ages = [EVENTS_KEPT_S + 10, EVENTS_KEPT_S + 5, EVENTS_KEPT_S + 1, EVENTS_KEPT_S - 1, 0.0]
        late = [LateEvent(i, f"e{i}", "web", "login.failed", "c1", 1.0, 2.0, NOW - age) for i, age in enumerate(ages)]
        store.commit_batch([], Checkpoint("dispatch", 1, late_events=late), now=NOW)
        assert service(store).forget_late_events() == 3  # two slices of 2, the second short
        assert [e.event_id for e in store.list_late_events(limit=10)[0]] == ["e4", "e3"]
    finally:
        store.close()


def test_a_failing_retention_is_logged_and_dispatching_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def forget_late_events(self, ingested_before: float, limit: int) -> int:
            raise RuntimeError("the database is gone")

    assert service(Broken()).forget_late_events() == 0
    assert "late events' retention failed" in caplog.text
