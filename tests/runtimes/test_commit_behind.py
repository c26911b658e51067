"""The processor's commits run behind its engine (issue 17, item 34): while the writer thread
commits one batch, the processor's thread folds the next. What must hold: the store's offset
only moves forward, a commit that fails behind loses and doubles nothing, and a failure that is
one event's still quarantines only that event."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from ringfence.runtimes.embedded import processor as processor_module
from ringfence.runtimes.embedded.commit_behind import BehindCommitFailed, CommitBehind
from ringfence.store.quarantine import QuarantineRepository
from tests.helpers.factories import T0
from tests.helpers.processor import FIXED, HUGE, Harness, quarantined_total, refuse_alert_of, score


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_module, "BATCH_SIZE", 2)  # several batches from a few events
    monkeypatch.setattr(processor_module, "STORE_RETRY_S", 0.05)


def scores_of(h: Harness, customer: str) -> float:
    for _ in range(50):  # read from the test's thread: a dict may change size under it
        try:
            return float(h.states().get(("scores", customer), (0.0, None))[0])
        except RuntimeError:
            continue
    raise AssertionError("the engine's state could not be read")


def test_the_next_batch_is_folded_while_a_commit_runs_and_offsets_only_move_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path / "a")
    real = h.store.commit_batch
    gate = threading.Event()
    committed: list[tuple[int, str]] = []

    def gated(signals: Any, checkpoint: Any, now: float) -> Any:
        gate.wait(10)
        out = real(signals, checkpoint, now)
        committed.append((checkpoint.offset, threading.current_thread().name))
        return out

    monkeypatch.setattr(h.store, "commit_batch", gated)
    h.append(*(score(n, 50 + n) for n in range(1, 7)))  # three batches of one customer
    with h.running():
        h.wait_for(lambda: scores_of(h, "cus_1") == 4.0)  # the second batch folded...
        assert h.processor.offset == 0  # ...while the first one's commit waits
        assert h.store.load_checkpoint("embedded")[0] == 0
        gate.set()
        h.caught_up()
    assert [offset for offset, _ in committed] == [2, 4, 6]
    lag = h.metrics.registry.get_sample_value("ringfence_processor_lag_events")
    assert lag == 0  # as of the last commit, not as of the last batch handed over
    assert {thread for _, thread in committed} == {"embedded-commit_0"}
    assert h.alerted() == {f"evt-{n}" for n in range(1, 7)}
    restarted = Harness(tmp_path / "a")
    assert restarted.states() == h.states()
    assert restarted.processor.offset == 6
    h.close()
    restarted.close()


def test_a_store_failure_behind_runs_the_batches_again_from_the_checkpoint_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch's commit fails while the third is folded: both are run again from the
    first one's checkpoint; nothing is lost, counted twice or quarantined."""
    failing, clean = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    real = failing.store.commit_batch
    calls = 0

    def flaky(signals: Any, checkpoint: Any, now: float) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real(signals, checkpoint, now)

    monkeypatch.setattr(failing.store, "commit_batch", flaky)
    events = [score(n, 50 + n, f"cus_{n % 2}") for n in range(1, 8)]
    for h in (failing, clean):
        h.append(*events)
        with h.running():
            h.caught_up()
    assert calls > 4  # it failed, and was committed again
    assert failing.alerted() == clean.alerted() == {f"evt-{n}" for n in range(1, 8)}
    assert failing.states() == clean.states()
    assert scores_of(failing, "cus_1") == 4.0
    assert failing.quarantined() == []
    restarted = Harness(tmp_path / "a")
    assert restarted.states() == clean.states()
    for h in (failing, clean, restarted):
        h.close()


def test_a_failure_behind_that_is_one_events_quarantines_that_event_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refuses evt-3's alert (not a failure of the store) in the second batch's
    commit, run behind while the third batch is folded: the batches run again, committed on
    the processor's thread, and the driver quarantines evt-3 alone."""
    failing, clean = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    refuse_alert_of(failing.store, "evt-3", monkeypatch)
    failing.append(*(score(n, 50 + n) for n in range(1, 7)))
    clean.append(*(score(n, 50 + n) for n in range(1, 7) if n != 3))
    with clean.running():
        clean.caught_up()
    seen: list[str] = []
    with failing.running():
        failing.caught_up()
        assert failing.alerted() == clean.alerted() == {f"evt-{n}" for n in (1, 2, 4, 5, 6)}
        assert [e["event_id"] for e in failing.quarantined()] == ["evt-3"]
        assert quarantined_total(failing.metrics) == 1
        assert failing.states() == clean.states()  # evt-3 counted nowhere
        assert scores_of(failing, "cus_1") == 5.0
        # later batches of the same run commit behind again
        monkeypatch.setattr(failing.store, "commit_batch", _on_thread(failing.store.commit_batch, seen))
        failing.append(score(7, 70), score(8, 80))
        failing.caught_up()
    assert seen == ["embedded-commit_0"]
    for h in (failing, clean):
        h.close()


def test_a_commit_that_fails_as_the_processor_stops_is_run_again_by_its_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processor stops right after it handed a batch over; that commit fails: the next
    run on the same processor restores the checkpoint first instead of reading on."""
    h, clean = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    real_commit, real_step = h.store.commit_batch, h.processor._step
    stop, calls = threading.Event(), 0

    def fails_once(signals: Any, checkpoint: Any, now: float) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            stop.wait(10)  # failed once the processor has left its loop
            raise sqlite3.OperationalError("disk I/O error")
        return real_commit(signals, checkpoint, now)

    def step_then_stop(*, behind: bool) -> int:
        processed = real_step(behind=behind)
        if processed:
            stop.set()
        return processed

    monkeypatch.setattr(h.store, "commit_batch", fails_once)
    monkeypatch.setattr(h.processor, "_step", step_then_stop)
    for each in (h, clean):
        each.append(score(1, 51), score(2, 52))
    h.processor.run(stop, 0.01)  # returns once the failed commit is settled
    assert calls == 1
    assert h.processor.offset == 0
    monkeypatch.setattr(h.processor, "_step", real_step)
    h.append(score(3, 53))
    clean.append(score(3, 53))
    for each in (h, clean):
        with each.running():
            each.caught_up()
    assert h.alerted() == clean.alerted() == {"evt-1", "evt-2", "evt-3"}
    assert h.states() == clean.states()
    for each in (h, clean):
        each.close()


def failed_behind(h: Harness) -> CommitBehind:
    """``h``'s processor with a commit behind it that failed (the store's failure)."""

    def broken() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    behind = CommitBehind("test", lambda: None, lambda: None)
    behind.submit(broken)
    h.processor._behind = behind
    return behind


def test_a_change_asked_for_while_a_commit_behind_fails_is_kept_for_after_the_restore(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    behind = failed_behind(h)
    h.processor.request_reload(FIXED)
    with pytest.raises(BehindCommitFailed):
        h.processor.run_once()
    h.processor.recover()
    h.processor.run_once()
    assert h.processor.engine.pack.version == "q2"
    behind.close()
    h.close()


def test_a_redrive_is_not_spent_on_a_commit_behind_that_failed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.append(score(1, HUGE))
    h.processor.run_once()
    (entry,) = h.quarantined()
    h.processor.request_reload(FIXED)  # the pack is fixed: the event would now run
    h.processor.run_once()
    QuarantineRepository(h.store).request_redrive(int(entry["id"]), "key:admin", T0)
    h.processor.request_redrive()
    behind = failed_behind(h)
    with pytest.raises(BehindCommitFailed):
        h.processor.run_once()
    (still,) = h.quarantined()
    assert still["status"] == "redrive_requested"
    assert still["attempts"] == entry["attempts"]
    h.processor.recover()
    h.processor.run_once()  # and it runs once the store is back
    assert h.quarantined()[0]["status"] == "redriven"
    behind.close()
    h.close()


def _on_thread(commit: Any, seen: list[str]) -> Any:
    def noting(*args: Any) -> Any:
        seen.append(threading.current_thread().name)
        return commit(*args)

    return noting


def test_the_writer_settles_in_order_and_says_what_failed() -> None:
    names: list[str] = []
    behind = CommitBehind("w", lambda: names.append("start"), lambda: names.append(threading.current_thread().name))
    behind.submit(lambda: names.append("first"))
    with pytest.raises(RuntimeError, match="settle"):
        behind.submit(lambda: None)  # one commit at a time
    behind.settle()
    assert names == ["start", "first"]
    assert not behind.pending

    def broken() -> None:
        raise ValueError("refused")

    behind.submit(broken)
    with pytest.raises(BehindCommitFailed) as failed:
        behind.settle()
    assert isinstance(failed.value.__cause__, ValueError)
    behind.submit(lambda: names.append("last"))
    behind.close()  # once the last commit has run, stops on the writer thread
    assert names[-2:] == ["last", "w_0"]


def test_the_processor_says_it_is_failing_while_the_store_refuses_and_is_well_again_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What readiness reads (``Processor.failing``): set at the first failed commit, kept while
    the store keeps refusing (a recovery between tries is no success), cleared by the next
    commit that goes through."""
    h = Harness(tmp_path / "a")
    real = h.store.commit_batch
    down = threading.Event()
    down.set()
    refused = []

    def refusing(signals: Any, checkpoint: Any, now: float) -> Any:
        if down.is_set():
            refused.append(checkpoint.offset)
            raise sqlite3.OperationalError("disk I/O error")
        return real(signals, checkpoint, now)

    monkeypatch.setattr(h.store, "commit_batch", refusing)
    h.append(*(score(n, 50 + n) for n in range(1, 5)))
    with h.running():
        h.wait_for(lambda: h.processor.failing is not None)
        first = h.processor.failing
        assert first is not None
        assert "OperationalError" in first[1]
        h.wait_for(lambda: len(refused) >= 4)  # several tries later (each after a recovery)
        assert h.processor.failing is not None
        assert h.processor.failing[0] == first[0]  # failing since the first
        assert quarantined_total(h.metrics) == 0  # the store's failure, no event's
        down.clear()
        h.caught_up()
        h.wait_for(lambda: h.processor.failing is None)
    assert h.alerted() == {f"evt-{n}" for n in range(1, 5)}
    h.close()
