"""The processor's retention: a round every minute, on idle steps. The journal's segments go
whole; rows (late events, a journal written before segments) go a slice per idle step until
the round is done, so no step holds the journal (and ingest) for long; late events go with
their records."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringfence.engine import Engine, load_pack
from ringfence.metrics import Metrics
from ringfence.runtimes.embedded import processor as processor_module
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.processor import RETENTION_EVERY_S, Processor
from ringfence.store import SqliteStore
from ringfence.testing import FixedClock
from tests.helpers.factories import AUTHS_10M_PACK, T0, ev
from tests.helpers.journal import write_legacy_journal

PACK = load_pack(AUTHS_10M_PACK)
DAY = 86400.0


def retaining(tmp_path: Path, log: SqliteLog | None = None) -> tuple[FixedClock, SqliteLog, SqliteStore, Processor]:
    """A processor keeping a day of journal (segments of 10 s), recovered, at T0."""
    clock = FixedClock(T0)
    log = log or SqliteLog(tmp_path / "j.db", 2, segment_s=10.0)
    store = SqliteStore(tmp_path / "s.db")
    p = Processor(log, store, Engine(PACK), Metrics(), clock, retention_s=DAY)
    p.recover()
    return clock, log, store, p


def test_a_round_drops_old_segments_and_late_events_a_slice_per_idle_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processor_module, "RETENTION_ROWS", 2)
    clock, log, store, p = retaining(tmp_path)
    log.append([ev(at=T0, card_id=f"c{i}") for i in range(6)], ingested_at=T0)  # offsets 1-6: a segment
    log.append([ev(at=T0, card_id=f"d{i}") for i in range(4)], ingested_at=T0 + 15)  # 7-10: the next
    log.append([ev(at=T0, card_id=f"e{i}") for i in range(3)], ingested_at=T0 + 30)  # 11-13: the newest
    with store.transaction() as conn:  # late events of records 2, 3, 5 (old), 9 (old) and 12 (young)
        for offset, at in ((2, T0), (3, T0), (5, T0), (9, T0 + 15), (12, T0 + 30)):
            conn.execute("INSERT INTO late_events VALUES (?, 'e', 'web', 'login', NULL, 0, 0, ?)", (offset, at))
    clock.advance(DAY + 20)  # records 1-10 are old, 11-13 not
    assert p.run_once() == 13
    assert p.run_once() == 0  # idle: the oldest segment goes whole (6 records: over a slice), two late events
    assert [r.offset for r in log.read(0, 100)] == [7, 8, 9, 10, 11, 12, 13]
    assert sorted(e.offset for e in store.list_late_events()[0]) == [5, 9, 12]
    assert p.run_once() == 0  # the round goes on: the next segment, two more late events
    assert [r.offset for r in log.read(0, 100)] == [11, 12, 13]
    assert [s.first for s in log.segments()] == [11]
    assert sorted(e.offset for e in store.list_late_events()[0]) == [12]
    assert p.run_once() == 0  # nothing was left: the round is over
    # the newest segment is never dropped (ingest appends to it), however old its records
    clock.advance(RETENTION_EVERY_S + 60)
    assert p.run_once() == 0
    assert log.count() == 3
    log.append([ev(at=T0, card_id="f")], ingested_at=T0 + DAY + 100)  # a new segment: 11-13's closes
    assert p.run_once() == 1
    clock.advance(RETENTION_EVERY_S)
    assert p.run_once() == 0
    assert [r.offset for r in log.read(0, 100)] == [14]
    assert store.list_late_events()[0] == []


def test_a_round_over_a_journal_written_before_segments_that_lasts_past_a_minute_is_reported_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(processor_module, "RETENTION_ROWS", 1)
    write_legacy_journal(tmp_path / "j.db", 2, [(ev(at=T0, card_id=f"c{i}"), T0) for i in range(6)])
    clock, log, _, p = retaining(tmp_path, SqliteLog(tmp_path / "j.db", 2, segment_s=10.0))
    clock.advance(DAY + 10)
    assert p.run_once() == 6
    with caplog.at_level("WARNING", logger="ringfence.processor"):
        for step in range(5):  # a processor with an idle step a minute only (none after the last slice)
            assert p.run_once() == 0
            clock.advance(RETENTION_EVERY_S if step < 4 else 1)
    behind = [r.getMessage() for r in caplog.records if "retention is behind" in r.getMessage()]
    assert behind == [
        "retention is behind: a round begun 60 s ago has deleted 1 processed events from the log so far; "
        "the processor has few idle moments",
        "retention is behind: a round begun 120 s ago has deleted 2 processed events from the log so far; "
        "the processor has few idle moments",
        "retention is behind: a round begun 180 s ago has deleted 3 processed events from the log so far; "
        "the processor has few idle moments",
        "retention is behind: a round begun 240 s ago has deleted 4 processed events from the log so far; "
        "the processor has few idle moments",
    ]
    assert log.count() == 1
