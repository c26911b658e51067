"""When nothing arrives, event time runs on with the wall clock: a quiet source is still
reported silent, but a replay of old events is not closed early by today's clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ringfence.alerts.model import AlertQuery
from ringfence.engine import Engine, load_pack
from ringfence.metrics import Metrics
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.processor import Processor
from ringfence.store import SqliteStore
from ringfence.testing import FixedClock
from tests.helpers.factories import T0, ev

SILENT = """
version: t1
patterns:
  - id: silent
    kind: absence
    by: source
    within: 5m
    expect: {on: [api.request]}
    severity: high
    audience: ops
    title: "{source} silent"
    dedup: "{source}"
"""
PACK = load_pack(SILENT)


def processor(tmp_path: Path, clock: FixedClock) -> tuple[Processor, SqliteLog, SqliteStore]:
    log, store = SqliteLog(tmp_path / "j.db", 2), SqliteStore(tmp_path / "s.db")
    p = Processor(log, store, Engine(PACK), Metrics(), clock)
    p.recover()
    return p, log, store


def test_a_quiet_source_is_reported_once_the_wall_clock_passes_its_deadline(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    p, log, store = processor(tmp_path, clock)
    log.append([ev("api.request", at=T0, customer_id=None, source="gw")], ingested_at=T0)  # live: arrives as it happens
    assert p.run_once() == 1
    clock.advance(200)
    p.run_once()
    assert store.count_alerts() == 0  # 200 s of silence: not yet
    clock.advance(110)  # 310 s since the last event: past 5 min + lateness
    p.run_once()
    (alert,) = store.list_alerts(AlertQuery())[0]
    assert alert.title == "gw silent"
    clock.advance(600)
    p.run_once()
    assert store.count_alerts() == 1  # fired once


def test_a_restart_does_not_postpone_a_silence_by_its_downtime(tmp_path: Path) -> None:
    """Event time runs on from the newest record's arrival, which a restart reads back."""
    clock = FixedClock(T0)
    p, log, store = processor(tmp_path, clock)
    log.append([ev("api.request", at=T0, customer_id=None, source="gw")], ingested_at=T0)
    assert p.run_once() == 1
    clock.advance(30)
    p.run_once()  # ... killed here, and started again 120 s later
    clock.advance(120)
    again = Processor(log, store, Engine(PACK), Metrics(), clock)
    again.recover()
    again.run_once()
    clock.advance(160)  # 310 s since the event arrived, 160 s since the start
    again.run_once()
    assert [a.title for a in store.list_alerts(AlertQuery())[0]] == ["gw silent"]


def test_old_events_replayed_now_are_not_closed_by_todays_clock(tmp_path: Path) -> None:
    clock = FixedClock(T0 + 30 * 86400)  # the events are a month old
    p, log, store = processor(tmp_path, clock)
    log.append([ev("api.request", at=T0, customer_id=None, source="gw")], ingested_at=clock.time())
    assert p.run_once() == 1
    clock.advance(60)
    p.run_once()
    assert store.count_alerts() == 0  # only 60 s of (extrapolated) event time have passed


def test_an_events_hits_are_timed_to_the_end_of_their_commit_and_a_timers_are_not_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ringfence_ingest_to_alert_seconds`` runs to the commit that makes the alert queryable;
    a silence's hit comes minutes after its event by design, so it is not the path's latency."""
    pack = load_pack(
        SILENT
        + """
rules:
  - {id: failed, on: [api.request], when: data.status >= 500, severity: high, audience: ops,
     title: "{source} failed", dedup: "{event_id}"}
"""
    )
    clock = FixedClock(T0)
    log, store, metrics = SqliteLog(tmp_path / "j.db", 2), SqliteStore(tmp_path / "s.db"), Metrics()
    p = Processor(log, store, Engine(pack), metrics, clock)
    p.recover()
    commit = store.commit_batch

    def taking_40ms(*args: Any) -> Any:
        created = commit(*args)
        clock.advance(0.04)
        return created

    monkeypatch.setattr(store, "commit_batch", taking_40ms)
    log.append([ev("api.request", at=T0, customer_id=None, source="gw", status=503)], ingested_at=T0)
    assert p.run_once() == 1
    clock.advance(310)  # the silence fires in a batch of an event that raises nothing
    log.append([ev("api.request", at=T0 + 310, customer_id=None, source="other")], ingested_at=T0 + 310)
    assert p.run_once() == 1
    assert sorted(a.rule_id for a in store.list_alerts(AlertQuery())[0]) == ["failed", "silent"]

    def sample(suffix: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(f"ringfence_ingest_to_alert_seconds{suffix}", labels)

    assert sample("_count") == 1
    assert sample("_sum") == pytest.approx(0.04)
    assert (sample("_bucket", le="0.025"), sample("_bucket", le="0.05")) == (0.0, 1.0)
