"""Poison events: an event the decoder, the engine or the state codec cannot handle is
quarantined, and processing goes on with the next one (issue 15, item 1).

Poison is written straight into the journal (the ingest checks would refuse it) or made by
fault injection, so these tests hold whatever ingest lets through.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from ringfence.engine import Engine
from ringfence.engine.rules import AlertSignal
from ringfence.store import SqliteStore, state_log
from ringfence.store.quarantine import QuarantinedEvent, QuarantineRepository, is_store_failure, reason_of, write
from tests.helpers.factories import T0
from tests.helpers.processor import AUDIT_KEY, FIXED, HUGE, PACK, Harness, quarantined_total, refuse_alert_of, score


def test_a_poison_event_is_quarantined_and_the_events_after_it_still_alert(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.append(score(1, 50), score(2, HUGE, "cus_p"), score(3, 60))
    with h.running():
        h.caught_up()
    assert h.alerted() == {"evt-1", "evt-3"}
    (entry,) = h.quarantined()
    assert entry["offset"] == 2
    assert entry["origin"] == "journal"
    assert (entry["source"], entry["event_id"], entry["type"]) == ("bank", "evt-2", "custom.score")
    assert entry["reason"].startswith("OverflowError: ")
    assert entry["pack_version"] == "q1"
    assert entry["status"] == "quarantined"
    assert entry["partition"] in (0, 1)
    assert entry["ingested_at"].startswith("20")
    assert quarantined_total(h.metrics) == 1
    h.close()


def test_after_a_restart_processing_goes_on_past_the_poison_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.append(score(1, 50), score(2, HUGE, "cus_p"))
    with h.running():
        h.caught_up()
    h.close()
    again = Harness(tmp_path)  # a restart over the same data dir
    assert again.processor.offset == 2
    again.append(score(3, 70))
    with again.running():
        again.caught_up()
    assert again.alerted() == {"evt-1", "evt-3"}
    assert len(again.quarantined()) == 1  # not quarantined twice
    again.close()


def test_nothing_of_a_quarantined_event_stays_in_the_state(tmp_path: Path) -> None:
    # the poison's count was applied before its last_score failed to encode: it must go too
    poisoned, clean = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    poisoned.append(score(1, 5), score(4, 9, "cus_2"), score(2, HUGE), score(3, 7, "cus_3"))
    clean.append(score(1, 5), score(4, 9, "cus_2"), score(3, 7, "cus_3"))
    for h in (poisoned, clean):
        with h.running():
            h.caught_up()
    assert poisoned.states() == clean.states()
    assert poisoned.states()[("scores", "cus_1")][0] == 1.0
    restarted = Harness(tmp_path / "a")  # and what was checkpointed is the same
    assert restarted.states() == clean.states()
    for h in (poisoned, clean, restarted):
        h.close()


class FailsAfterCounting(Engine):
    """An engine that fails on ``evt-2`` after it counted it: its effect is in memory."""

    def process_raw(
        self, body: bytes, offset: int, partition: int, ingested_at: float
    ) -> tuple[list[AlertSignal], float | None]:
        out = super().process_raw(body, offset, partition, ingested_at)
        if b'"evt-2"' in body:
            raise RuntimeError("failed after counting")
        return out


def test_a_snapshot_written_with_the_records_before_a_poison_one_holds_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The good records before a poison one are committed before the engine is reset; a
    snapshot part taken then would read the poison's effect (and keep it for any key the
    changelog after the snapshot's start does not hold)."""
    monkeypatch.setattr(state_log, "MIN_LOG_ROWS", 10**9)  # no snapshot yet
    monkeypatch.setattr(state_log, "MIN_PART_ROWS", 10**6)  # then, a whole one with each commit
    poisoned, clean = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    poisoned.processor.engine = FailsAfterCounting(PACK)
    poisoned.processor.recover()
    for h in (poisoned, clean):
        h.append(score(1, 5), score(4, 9, "cus_2"))
        with h.running():
            h.caught_up()
    monkeypatch.setattr(state_log, "MIN_LOG_ROWS", 0)  # a snapshot is due at every commit
    poisoned.append(score(10, 1, "cus_9"), score(2, 3), score(11, 2, "cus_3"))
    clean.append(score(10, 1, "cus_9"), score(11, 2, "cus_3"))
    for h in (poisoned, clean):
        with h.running():
            h.caught_up()
    assert len(poisoned.quarantined()) == 1
    assert poisoned.store.conn().execute("SELECT count(*) FROM snapshots WHERE complete = 1").fetchone()[0] == 1
    restarted = Harness(tmp_path / "a")
    assert restarted.states() == clean.states()
    assert restarted.states()[("scores", "cus_1")][0] == 1.0
    for h in (poisoned, clean, restarted):
        h.close()


def test_a_transient_store_failure_is_retried_not_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path)
    real = h.store.commit_batch
    failures = iter([sqlite3.OperationalError("database is locked"), sqlite3.OperationalError("disk I/O error")])

    def flaky(*args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(h.store, "commit_batch", flaky)
    h.append(score(1, 50), score(2, 60))
    with h.running():
        h.caught_up()
    assert h.alerted() == {"evt-1", "evt-2"}
    assert h.quarantined() == []
    assert quarantined_total(h.metrics) == 0
    h.close()


@pytest.mark.parametrize(
    ("where", "inject"),
    [
        ("engine", "ringfence.engine.engine.Engine.process"),
        ("state codec", "ringfence.engine.engine.encode_state"),
        ("decoder", "ringfence.engine.engine.decode_event"),
    ],
)
def test_any_exception_of_the_decoder_engine_or_codec_quarantines_only_its_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, inject: str
) -> None:
    module_name, _, attr = inject.rpartition(".")
    import importlib

    try:
        owner: Any = importlib.import_module(module_name)
    except ModuleNotFoundError:  # a class attribute
        module_name, _, cls = module_name.rpartition(".")
        owner = getattr(importlib.import_module(module_name), cls)
    real = getattr(owner, attr)

    def faulty(*args: Any, **kwargs: Any) -> Any:
        text = repr(args)  # the event (engine), its body (decoder) or its state (codec)
        if "evt-2" in text or "value=[13]," in text:
            raise RuntimeError(f"injected {where} fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, faulty)
    h = Harness(tmp_path)
    h.append(score(1, 50), score(2, 13, "cus_p"), score(3, 60))
    with h.running():
        h.caught_up()
    assert h.alerted() == {"evt-1", "evt-3"}
    (entry,) = h.quarantined()
    assert entry["offset"] == 2
    assert entry["reason"] == f"RuntimeError: injected {where} fault"
    h.close()


def test_an_alert_the_store_cannot_take_quarantines_its_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path)
    refuse_alert_of(h.store, "evt-2", monkeypatch)
    h.append(score(1, 50), score(2, 60), score(3, 70))
    with h.running():
        h.caught_up()
    assert h.alerted() == {"evt-1", "evt-3"}
    assert [e["event_id"] for e in h.quarantined()] == ["evt-2"]
    h.close()


def test_a_record_that_is_not_an_event_is_quarantined(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.append(score(1, 50))
    with sqlite3.connect(h.log.segment_path(1)) as raw:  # the journal's segment, offset 1 so far
        raw.execute(
            "INSERT INTO journal (offset, partition, source, event_id, ingested_at, body) "
            "VALUES (2, 0, 'x', 'y', ?, ?)",
            (T0, b"\xff not json"),
        )
    h.append(score(3, 60))
    with h.running():
        h.caught_up()
    assert h.alerted() == {"evt-1", "evt-3"}
    (entry,) = h.quarantined()
    assert entry["offset"] == 2
    assert entry["reason"].startswith("DecodeError")
    h.close()


def test_a_redriven_event_alerts_after_the_pack_is_fixed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.append(score(1, 50), score(2, HUGE, "cus_p"))
    with h.running() as processor:
        h.caught_up()
        (entry,) = h.quarantined()
        repo = QuarantineRepository(h.store)
        processor.request_reload(FIXED)
        repo.request_redrive(int(entry["id"]), "key:admin", T0 + 4000)
        processor.request_redrive()
        h.wait_for(lambda: h.quarantined()[0]["status"] == "redriven")
    assert h.alerted() == {"evt-1", "evt-2"}
    done = h.quarantined()[0]
    assert done["redriven_by"] == "key:admin"
    assert done["redriven_at"] is not None
    audit, _ = h.store.list_audit()
    assert audit[0]["action"] == "quarantine.redrive"
    assert audit[0]["target"] == entry["id"]
    h.close()


def test_a_redrive_that_fails_again_goes_back_to_quarantine(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.append(score(2, HUGE))
    with h.running() as processor:
        h.caught_up()
        (entry,) = h.quarantined()
        QuarantineRepository(h.store).request_redrive(int(entry["id"]), "key:admin", T0)
        processor.request_redrive()
        h.wait_for(lambda: h.quarantined()[0]["attempts"] == 2)
    assert h.quarantined()[0]["status"] == "quarantined"
    h.close()


def test_a_redrive_requested_before_a_crash_runs_after_the_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.append(score(2, HUGE))
    with h.running():
        h.caught_up()
    (entry,) = h.quarantined()
    QuarantineRepository(h.store).request_redrive(int(entry["id"]), "key:admin", T0)  # processor down
    h.close()
    again = Harness(tmp_path, FIXED)
    with again.running():
        again.wait_for(lambda: again.quarantined()[0]["status"] == "redriven")
    assert again.alerted() == {"evt-2"}
    again.close()


def test_recording_the_same_poison_twice_keeps_one_row(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", AUDIT_KEY)
    poison = QuarantinedEvent.of(b"{}", 7, 1, T0, ValueError("x"), "v1")
    for _ in range(2):
        with store.transaction() as conn:
            write(conn, [poison], [], T0)
    entries, _ = QuarantineRepository(store).entries()
    assert len(entries) == 1
    assert entries[0].attempts == 1
    store.close()


def test_reasons_do_not_carry_card_numbers_and_store_failures_are_told_apart() -> None:
    assert "4111" not in reason_of(ValueError("could not convert '4111 1111 1111 1111'"))
    assert is_store_failure(sqlite3.OperationalError("database is locked"))
    assert is_store_failure(OSError("disk full"))
    assert not is_store_failure(OverflowError("can't serialize"))
    assert not is_store_failure(sqlite3.IntegrityError("x"))


def test_postgresql_failures_of_every_kind_are_store_failures_and_memory_errors_are_not() -> None:
    import psycopg.errors as errors  # the dev extra has the postgres extra
    import psycopg_pool as pool

    for kind in (errors.DeadlockDetected, errors.SerializationFailure, errors.AdminShutdown, errors.DiskFull):
        assert is_store_failure(kind("x")), kind  # subclasses of OperationalError: retried as they are
    assert is_store_failure(pool.PoolTimeout("x"))
    assert not is_store_failure(errors.DataError("x"))  # one event's value the database refuses
    assert not is_store_failure(MemoryError())  # one event growing state without bound: found and quarantined


def test_a_failure_outside_a_batch_pauses_instead_of_spinning_and_quarantines_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path)
    reloads = 0
    recover = h.processor.recover

    def counting_recover() -> None:
        nonlocal reloads
        reloads += 1
        recover()

    def broken_housekeeping() -> None:
        raise RuntimeError("housekeeping failed")  # not any event's fault

    monkeypatch.setattr(h.processor, "recover", counting_recover)
    monkeypatch.setattr(h.processor, "_housekeeping", broken_housekeeping)
    with h.running():
        time.sleep(1.5)
    assert reloads <= 3  # one reload per pause (1 s), not a reload loop at full speed
    assert QuarantineRepository(h.store).entries()[0] == []
    h.store.close()


def test_a_reason_carries_no_card_number_in_any_spelling() -> None:
    for spelling in ("4111#1111#1111#1111", "\u2463\u2460\u2460\u2460 1111 1111 1111", "a4111111111111111"):
        assert "1111" not in reason_of(ValueError(f"bad value {spelling!r}")), spelling
