"""Restoring the processor's state after a restart: the platform takes events while a large
state is read back, readiness waits for it, and a restore that fails part-way is never run
on (its partial state would miscount every key it missed)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ringfence.config import Settings
from ringfence.engine import Engine, load_pack
from ringfence.errors import RequestError, StoreError
from ringfence.metrics import Metrics
from ringfence.runtimes.embedded import platform as embedded
from ringfence.runtimes.embedded import processor as processor_module
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.processor import Processor
from ringfence.store import SqliteStore, state_log
from ringfence.store.state_log import SnapshotSource
from ringfence.testing import FixedClock, event
from tests.helpers.factories import AUTHS_10M_PACK, T0, ev

PACK = load_pack(AUTHS_10M_PACK)
CARDS = [f"card-{i}" for i in range(50)]


def count_of(p: Processor, card: str) -> float:
    value: float = p.engine.features_of({"data": {"card_id": card}}, T0 + 60)["auths_10m"]
    return value


def test_a_restore_that_fails_part_way_is_retried_before_any_event_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FixedClock(T0 + 60)
    log, store = SqliteLog(tmp_path / "j.db", 1), SqliteStore(tmp_path / "s.db")
    first = Processor(log, store, Engine(PACK), Metrics(), clock)
    first.recover()
    log.append([ev(at=T0 + i % 10, card_id=card) for i, card in enumerate(CARDS * 2)], ingested_at=T0)
    assert first.run_once() == 100
    assert count_of(first, CARDS[-1]) == 2

    # the restart: the store fails after a few rows of the state
    restarted = Processor(log, store, Engine(PACK), Metrics(), clock)
    whole = store.restore_state

    def failing(engine: SnapshotSource) -> int:
        whole(engine)  # read, into the engine, before the store failed
        raise StoreError("disk I/O error")

    monkeypatch.setattr(store, "restore_state", failing)
    with pytest.raises(StoreError):
        restarted.run_once()
    assert not restarted.recovered.is_set()
    with pytest.raises(StoreError):
        restarted.reset()  # a failed commit's reset, with the store still failing
    assert not restarted.recovered.is_set()

    monkeypatch.setattr(store, "restore_state", whole)
    log.append([ev(at=T0 + 20, card_id=card) for card in CARDS], ingested_at=T0 + 20)
    assert restarted.run_once() == 50
    assert restarted.recovered.is_set()
    assert [count_of(restarted, card) for card in CARDS] == [3] * len(CARDS)


def test_a_restarted_platform_takes_events_while_its_state_is_restored_and_is_ready_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, ingest_process=False)
    platform = embedded.Platform(settings)
    platform.start()
    assert platform.processor.started.wait(10)
    assert platform.ready
    platform.stop()

    release = threading.Event()
    whole = SqliteStore.restore_state

    def slow(self: SqliteStore, engine: SnapshotSource) -> int:
        release.wait(30)  # a state of a million customers takes seconds
        return whole(self, engine)

    monkeypatch.setattr(SqliteStore, "restore_state", slow)
    monkeypatch.setattr(embedded, "RESTORE_WAIT_S", 0.2)
    platform = embedded.Platform(settings)
    try:
        platform.start()
        assert platform.accepting
        assert not platform.ready
        with pytest.raises(RequestError) as refused:
            platform.customer_features("cus_1")
        assert refused.value.status == 503
        assert platform.ingest is not None
        body = json.dumps([event("card.authorization", at=T0, event_id=f"e{i}") for i in range(3)]).encode()
        result = asyncio.run(platform.ingest.ingest(body, ndjson=False, sources=None))
        assert result.accepted == 3
        assert platform.processed_offset() == 0
        assert platform.lag() == 3

        release.set()
        assert platform.processor.recovered.wait(10)
        for _ in range(200):
            if platform.lag() == 0:
                break
            time.sleep(0.05)
        assert platform.ready
        assert platform.lag() == 0
        assert platform.customer_features("cus_1")[1]
    finally:
        release.set()
        platform.stop()


def test_a_checkpoint_that_cannot_be_read_stops_processing_and_refuses_events(tmp_path: Path) -> None:
    """A corrupt state row is no store outage: retrying cannot help, so the processor stops
    (not once a second for ever) and the platform refuses events it could never process."""
    settings = Settings(data_dir=tmp_path, ingest_process=False)
    platform = embedded.Platform(settings)
    name = next(iter(platform.engine.persisted_names.values()))
    with platform.store.transaction() as conn:
        conn.execute("INSERT INTO feature_state VALUES (?, ?, ?)", (name, "k", b"\xc1 not msgpack"))
    try:
        platform.start()
        for _ in range(100):
            if platform.processor.failure is not None:
                break
            time.sleep(0.05)
        assert platform.processor.failure is not None
        assert not platform.accepting
        assert not platform.ready
        assert platform._thread is not None
        platform._thread.join(5)
        assert not platform._thread.is_alive()
    finally:
        platform.stop()


def test_a_store_outage_while_restoring_is_retried_until_it_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, ingest_process=False)
    outage = {"left": 3}
    whole = SqliteStore.restore_state

    def flaky(self: SqliteStore, engine: SnapshotSource) -> int:
        if outage["left"]:
            outage["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return whole(self, engine)

    monkeypatch.setattr(SqliteStore, "restore_state", flaky)
    monkeypatch.setattr(processor_module, "STORE_RETRY_S", 0.05)
    platform = embedded.Platform(settings)
    try:
        platform.start()
        assert platform.processor.started.wait(10)
        assert outage["left"] == 0
        assert platform.ready
        assert platform.processor.failure is None
    finally:
        platform.stop()


def test_housekeeping_the_store_refuses_while_idle_costs_no_restore_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_log, "MIN_LOG_ROWS", 1)  # a snapshot is due once anything is logged
    monkeypatch.setattr(processor_module, "STORE_RETRY_S", 0.05)
    clock = FixedClock(T0 + 60)
    log, store = SqliteLog(tmp_path / "j.db", 1), SqliteStore(tmp_path / "s.db")
    p = Processor(log, store, Engine(PACK), Metrics(), clock, retention_s=3600)
    p.recover()
    log.append([ev(at=T0 + i % 10, card_id=card) for i, card in enumerate(CARDS)], ingested_at=T0)
    restores, refused, retained = 0, 0, []
    recover, write, delete = p.recover, store.states.write, log.delete_older_than

    def counted_recover() -> None:
        nonlocal restores
        restores += 1
        recover()

    def refusing_idle_parts(conn: Any, changes: list[bytes], part: state_log.SnapshotPart | None) -> int:
        nonlocal refused
        if part is not None and not changes and refused < 2:  # an idle step's part
            refused += 1
            raise sqlite3.OperationalError("disk I/O error")
        return write(conn, changes, part)

    def refusing_retention_once(before: float, processed: int, max_rows: int) -> int:
        if not retained:
            retained.append("refused")
            raise sqlite3.OperationalError("database is locked")
        retained.append("done")
        return delete(before, processed, max_rows)

    monkeypatch.setattr(p, "recover", counted_recover)
    monkeypatch.setattr(log, "delete_older_than", refusing_retention_once)
    monkeypatch.setattr(store.states, "write", refusing_idle_parts)
    stop = threading.Event()
    runner = threading.Thread(target=p.run, args=(stop, 0.01), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 15
        while not (
            store.conn().execute("SELECT 1 FROM snapshots WHERE complete = 1").fetchone() and "done" in retained
        ):
            assert time.monotonic() < deadline, "no snapshot completed after the store came back"
            time.sleep(0.02)
    finally:
        stop.set()
        p.wakeup.set()
        runner.join(10)

    assert refused == 2
    assert retained == ["refused", "done"]  # retried, once, after the failure
    assert restores == 0  # the engine kept its state: nothing to read back
    # the snapshot written after the failures holds the whole state
    again = Processor(log, store, Engine(PACK), Metrics(), clock)
    again.recover()
    assert [count_of(again, card) for card in CARDS] == [1.0] * len(CARDS)


def test_a_commit_the_store_refuses_mid_snapshot_leaves_no_part_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_log, "MIN_LOG_ROWS", 10**9)  # no snapshot while the first cards come
    monkeypatch.setattr(state_log, "MIN_PART_ROWS", 3)  # then parts of a few rows: many parts a snapshot
    monkeypatch.setattr(state_log, "PART_ROWS_PER_CHANGE", 0)
    monkeypatch.setattr(state_log, "IDLE_PART_ROWS", 3)
    monkeypatch.setattr(processor_module, "BATCH_SIZE", 5)
    clock = FixedClock(T0 + 60)
    log, store = SqliteLog(tmp_path / "j.db", 1), SqliteStore(tmp_path / "s.db")
    p = Processor(log, store, Engine(PACK), Metrics(), clock)
    p.recover()
    log.append([ev(at=T0 + i % 10, card_id=card) for i, card in enumerate(CARDS)], ingested_at=T0)
    while p.offset < log.head():
        p.run_once()

    # a snapshot of the first cards is written a part at a time with the batches of others
    monkeypatch.setattr(state_log, "MIN_LOG_ROWS", 1)
    others = [f"other-{i}" for i in range(50)]
    log.append([ev(at=T0 + 20 + i % 10, card_id=card) for i, card in enumerate(others)], ingested_at=T0)
    commit, refused = store.commit_batch, []

    def refusing_once(signals: Any, checkpoint: Any, now: float) -> Any:
        part = checkpoint.snapshot
        if part is not None and part.index > 0 and not refused:  # a part in the middle of a walk
            refused.append(part.index)
            raise ValueError("an alert the store refuses")  # not the store's failure: the batch is isolated
        return commit(signals, checkpoint, now)

    monkeypatch.setattr(store, "commit_batch", refusing_once)
    while p.offset < log.head():
        p.run_once()
    for _ in range(100):  # idle steps, until the snapshot is complete
        p.run_once()
    assert refused
    assert store.conn().execute("SELECT COUNT(*) FROM snapshots WHERE complete = 1").fetchone()[0] == 1

    # the restored state is the live one: the snapshot has no part missing
    again = Processor(log, store, Engine(PACK), Metrics(), clock)
    again.recover()
    cards = CARDS + others
    assert [count_of(again, card) for card in cards] == [count_of(p, card) for card in cards] == [1.0] * len(cards)


def test_a_journal_deleted_under_its_store_is_not_served(tmp_path: Path) -> None:
    """New events would take offsets the store marks processed: taken (202) and never run, no
    alert raised (a hostile test deleted the journal between two starts)."""
    settings = Settings(data_dir=tmp_path, ingest_process=False)
    platform = embedded.Platform(settings)
    try:
        platform.start()
        assert platform.ingest is not None
        body = json.dumps([event("card.authorization", at=T0, event_id=f"e{i}") for i in range(5)]).encode()
        assert asyncio.run(platform.ingest.ingest(body, ndjson=False, sources=None)).accepted == 5
        for _ in range(200):
            if platform.processed_offset() == 5:
                break
            time.sleep(0.05)
        assert platform.processed_offset() == 5
    finally:
        platform.stop()
    for journal in tmp_path.glob("journal*"):
        if journal.is_dir():
            for part in journal.iterdir():
                part.unlink()
            journal.rmdir()
        else:
            journal.unlink()
    with pytest.raises(StoreError, match="processed the journal up to offset 5, but the journal ends at 0"):
        embedded.Platform(settings)
    embedded.Platform(Settings(data_dir=tmp_path / "fresh", ingest_process=False)).stop()  # a new one starts


def test_a_store_rolled_back_to_an_older_copy_is_not_served(tmp_path: Path) -> None:
    """The older copy has processed less of the journal: served, it would run those events again
    and notify their alerts again under new ids (no person's change came in between, so the
    audit trail's anchor cannot tell)."""
    settings = Settings(data_dir=tmp_path, ingest_process=False)

    def run(first: int) -> None:
        platform = embedded.Platform(settings)
        try:
            platform.start()
            assert platform.ingest is not None
            body = json.dumps([event("card.authorization", at=T0, event_id=f"e{i}") for i in range(first, first + 5)])
            assert asyncio.run(platform.ingest.ingest(body.encode(), ndjson=False, sources=None)).accepted == 5
            for _ in range(200):
                if platform.processed_offset() == first + 5:
                    break
                time.sleep(0.05)
            assert platform.processed_offset() == first + 5
        finally:
            platform.stop()

    run(0)
    older = tmp_path / "older"
    older.mkdir()
    for part in tmp_path.glob("store.sqlite3*"):  # the store with its files, as a backup keeps them
        shutil.copy2(part, older / part.name)
    run(5)
    for part in older.iterdir():
        shutil.copy2(part, tmp_path / part.name)
    with pytest.raises(StoreError, match=r"processed the journal up to offset 5, but journal\.sqlite3-processed"):
        embedded.Platform(settings)
    (tmp_path / "journal.sqlite3-processed").rename(tmp_path / "aside")  # served knowingly
    embedded.Platform(settings).stop()
