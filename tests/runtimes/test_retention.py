"""The processor's retention: a round every minute, deleted a slice per idle step until it is
done, so no step holds the journal (and ingest) for long; late events go with their records."""

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

PACK = load_pack(AUTHS_10M_PACK)
DAY = 86400.0


def retaining(tmp_path: Path) -> tuple[FixedClock, SqliteLog, SqliteStore, Processor]:
    """A processor keeping a day of journal, recovered, at T0."""
    clock = FixedClock(T0)
    log, store = SqliteLog(tmp_path / "j.db", 2), SqliteStore(tmp_path / "s.db")
    p = Processor(log, store, Engine(PACK), Metrics(), clock, retention_s=DAY)
    p.recover()
    return clock, log, store, p


def test_a_round_deletes_a_slice_per_idle_step_until_every_old_record_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processor_module, "RETENTION_ROWS", 4)
    clock, log, store, p = retaining(tmp_path)
    log.append([ev(at=T0, card_id=f"c{i}") for i in range(10)], ingested_at=T0)  # offsets 1-10: old
    log.append([ev(at=T0, card_id=f"d{i}") for i in range(3)], ingested_at=T0 + 20)  # 11-13: 20 s younger
    with store.transaction() as conn:  # late events of records 2, 9 (old) and 12 (young)
        for offset, at in ((2, T0), (9, T0), (12, T0 + 20)):
            conn.execute("INSERT INTO late_events VALUES (?, 'e', 'web', 'login', NULL, 0, 0, ?)", (offset, at))
    clock.advance(DAY + 10)
    assert p.run_once() == 13
    assert p.run_once() == 0  # idle: the first slice
    assert log.count() == 13 - 4
    counts = []
    while p.run_once() == 0 and len(counts) < 10:  # idle steps go on with the round
        counts.append(log.count())
        if counts[-1] == 3:
            break
    assert counts == [5, 3]  # four, then the last two; the young three stay
    assert [r.offset for r in log.read(0, 100)] == [11, 12, 13]
    assert [e.offset for e in store.list_late_events()[0]] == [12]
    # the round is over: the next is not due for a minute, though 11-13 are old 30 s later
    clock.advance(30)
    assert p.run_once() == 0
    assert log.count() == 3
    clock.advance(RETENTION_EVERY_S - 30)
    assert p.run_once() == 0
    assert log.count() == 0
    assert store.list_late_events()[0] == []


def test_a_round_that_lasts_past_a_minute_is_reported_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(processor_module, "RETENTION_ROWS", 1)
    clock, log, _, p = retaining(tmp_path)
    log.append([ev(at=T0, card_id=f"c{i}") for i in range(6)], ingested_at=T0)
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
