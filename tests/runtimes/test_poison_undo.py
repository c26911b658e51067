"""A poison event costs the embedded processor an undo of its batch in memory, not a reload of
its checkpoint, where the engine can undo (the compiled core): a reload reads the whole state
(seconds at a bank's), and each poison event cost two, so a flood of them starved every other
producer's events. What the processor then holds and commits is what a run without the poison
leaves."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ringfence.engine import Engine
from ringfence.events.model import Event
from ringfence.runtimes.processing import driver
from ringfence.store import state_log
from tests.helpers.differential import every_state_row, native_candidate
from tests.helpers.factories import T0
from tests.helpers.processor import HUGE, PACK, Harness, refuse_alert_of, score


def core_harness(tmp: Path) -> Harness:
    return Harness(tmp, engine=native_candidate()(PACK, 5.0))


def restores(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The offsets at which ``h``'s processor reads its checkpoint from now on."""
    seen: list[int] = []
    real = h.store.restore_state

    def counting(engine: Engine) -> int:
        seen.append(h.processor.offset)
        return real(engine)

    monkeypatch.setattr(h.store, "restore_state", counting)
    return seen


def not_an_event(h: Harness) -> None:
    """Write a record no engine can read at the journal's next offset (around ingest)."""
    offset = h.log.head() + 1
    with sqlite3.connect(h.log.segment_path(1)) as raw:
        raw.execute(
            "INSERT INTO journal (offset, partition, source, event_id, ingested_at, body) "
            "VALUES (?, 0, 'x', 'y', ?, ?)",
            (offset, T0, b"\xff not json"),
        )


def failing_once(real: Callable[..., Any], error: BaseException) -> tuple[Callable[..., Any], list[BaseException]]:
    """``real``, raising ``error`` at its first call instead; the list is empty once it has."""
    pending = [error]

    def call(*args: Any) -> Any:
        if pending:
            raise pending.pop()
        return real(*args)

    return call, pending


def run_once_and_compare(tmp: Path, h: Harness, clean: Harness) -> None:
    """One batch of 30 events through each; ``h`` (in ``tmp``), in memory and restarted from
    its store, then holds what ``clean`` holds. Closes them."""
    for each in (h, clean):
        each.append(*scores(1, 30))
        each.processor.run_once()
    assert h.processor.offset == clean.processor.offset == 30
    assert every_state_row(h.processor.engine) == every_state_row(clean.processor.engine)
    restarted = core_harness(tmp)
    assert every_state_row(restarted.processor.engine) == every_state_row(clean.processor.engine)
    for each in (h, clean, restarted):
        each.close()


def scores(first: int, count: int) -> list[Event]:
    """``count`` events of five customers, every third one alerting."""
    return [score(n, 50 if n % 3 == 0 else 5, f"cus_{n % 5}") for n in range(first, first + count)]


def test_a_flood_of_poison_records_costs_no_reload_and_leaves_what_a_clean_run_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_log, "MIN_LOG_ROWS", 0)  # a snapshot is due at every commit
    poisoned, clean = core_harness(tmp_path / "a"), core_harness(tmp_path / "b")
    reads = restores(poisoned, monkeypatch)
    # one batch: the events before each poison record changed the states of its customers
    for first in (1, 21, 41):
        poisoned.append(*scores(first, 20))
        not_an_event(poisoned)
    poisoned.append(*scores(61, 20))
    clean.append(*scores(1, 80))
    for h in (poisoned, clean):
        with h.running():
            h.caught_up()
    assert reads == []  # the checkpoint was not read again
    assert sorted(e["offset"] for e in poisoned.quarantined()) == [21, 42, 63]
    assert poisoned.alerted() == clean.alerted()
    assert len(clean.alerted()) == 26
    assert every_state_row(poisoned.processor.engine) == every_state_row(clean.processor.engine)
    snapshots = poisoned.store.conn().execute("SELECT max(gen) FROM snapshots WHERE complete = 1").fetchone()[0]
    # and another
    for first in (100, 120):
        not_an_event(poisoned)
        poisoned.append(*scores(first, 20))
    clean.append(*scores(100, 40))
    for h in (poisoned, clean):
        with h.running():
            h.caught_up()
    assert reads == []
    assert len(poisoned.quarantined()) == 5
    # snapshot parts went on being written across the undos
    assert poisoned.store.conn().execute("SELECT max(gen) FROM snapshots WHERE complete = 1").fetchone()[0] > snapshots
    assert poisoned.alerted() == clean.alerted()
    assert every_state_row(poisoned.processor.engine) == every_state_row(clean.processor.engine)
    restarted = core_harness(tmp_path / "a")  # what was committed (changelog and snapshot) is the same
    assert every_state_row(restarted.processor.engine) == every_state_row(clean.processor.engine)
    for h in (poisoned, clean, restarted):
        h.close()


def test_a_commit_the_store_refuses_reloads_the_checkpoint_and_leaves_what_a_clean_run_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the memory is then ahead of a store that did not take the batch: no undo comes back there
    refused, clean = core_harness(tmp_path / "a"), core_harness(tmp_path / "b")
    reads = restores(refused, monkeypatch)
    refuse_alert_of(refused.store, "evt-3", monkeypatch)
    refused.append(*scores(1, 10))
    clean.append(*[e for e in scores(1, 10) if e.event_id != "evt-3"])
    for h in (refused, clean):
        with h.running():
            h.caught_up()
    # as before: the commit behind, then on the processor's thread the batch, its record-by-record
    # commit, and the refused alert's own
    assert len(reads) == 4
    assert [e["event_id"] for e in refused.quarantined()] == ["evt-3"]
    assert refused.alerted() == clean.alerted()
    assert every_state_row(refused.processor.engine) == every_state_row(clean.processor.engine)
    for h in (refused, clean):
        h.close()


def test_the_records_before_a_poison_one_run_as_one_batch_not_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = core_harness(tmp_path)
    engine = h.processor.engine
    runs: list[int] = []
    real = engine.process_raw_many

    def counting(bodies, *args):  # type: ignore[no-untyped-def]
        runs.append(len(bodies))
        return real(bodies, *args)

    monkeypatch.setattr(engine, "process_raw_many", counting)
    h.append(*scores(1, 30))
    not_an_event(h)
    h.append(*scores(31, 30))
    with h.running():
        h.caught_up()
    assert h.processor.engine is engine  # never reloaded
    # the batch, failing at the poison; the 30 before it; the poison alone; the 30 after it
    assert runs == [61, 30, 1, 30]
    h.close()


def test_a_failure_after_the_batch_was_taken_goes_back_to_the_last_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the batch's changes were taken for its commit, then its housekeeping (timers made due,
    # expiry) failed: the batch never reached the store, so memory must not keep it either
    h, clean = core_harness(tmp_path / "a"), core_harness(tmp_path / "b")
    expire, failures = failing_once(driver.expire, ValueError("an engine's fault in a housekeeping step"))
    monkeypatch.setattr(driver, "expire", expire)
    run_once_and_compare(tmp_path / "a", h, clean)
    assert not failures  # it failed once


def test_a_failure_after_the_batch_was_handed_to_no_commit_goes_back_to_the_last_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the batch's commit failed before its write (not the store's failure): the batch is not
    # the store's, and its records then run one by one, their takes in one commit
    h, clean = core_harness(tmp_path / "a"), core_harness(tmp_path / "b")
    head, failures = failing_once(h.log.head, MemoryError())
    monkeypatch.setattr(h.log, "head", head)
    reads = restores(h, monkeypatch)
    run_once_and_compare(tmp_path / "a", h, clean)
    assert not failures
    assert reads == []  # undone


def test_the_reference_engine_reloads_once_and_once_a_poison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # it keeps no copies: the batch runs record by record after one reload, and each poison
    # reloads once more (committing the records before each poison apart would cost two each)
    h = Harness(tmp_path)  # the reference engine (a pack with half_space_trees runs on it by default)
    reads = restores(h, monkeypatch)
    for first in (1, 11, 21):
        h.append(score(first, 50), score(first + 1, HUGE, f"cus_p{first}"), *scores(first + 2, 8))
    with h.running():
        h.caught_up()
    assert len(reads) == 4
    assert {"evt-1", "evt-11", "evt-21"} <= h.alerted()
    assert len(h.quarantined()) == 3
    h.close()
