"""Rule back-tests in a child process: progress, a time budget that answers what was done,
bad stored events counted (not fatal), a child that dies with its reader or at its deadline
whatever its reader does, and a child nothing in the server's environment can subvert."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ringfence.events.decode import validate_event
from ringfence.runtimes import backtest
from ringfence.runtimes.backtest import BacktestFailed, run_in_child, run_job, start_child
from ringfence.runtimes.embedded import backtest as embedded_backtest
from ringfence.runtimes.embedded.backtest import CHILD_MODULE, journal_rows
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.testing import event
from tests.helpers.backtest import backtest_children, job, journal, run
from tests.helpers.journal import write_legacy_journal


class SteppingClock:
    """Monotonic seconds that advance ``step`` at every reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_backtest_reports_progress_then_hits_of_both_packs(tmp_path: Path) -> None:
    lines: list[dict[str, Any]] = []
    result = run_job(job(journal(tmp_path, 30), progress_every_s=0.0), lines.append, time.monotonic, journal_rows)
    assert lines[0] == {"progress": {"events": 0, "of": 30, "elapsed_s": lines[0]["progress"]["elapsed_s"]}}
    assert len(lines) > 1
    assert all("progress" in line for line in lines)
    assert (result["events"], result["of"], result["truncated"], result["reason"]) == (30, 30, False, None)
    assert result["hits"]["notify_low_balance"] == {"live": 0, "candidate": 30}


def test_a_spent_time_budget_answers_with_what_was_done(tmp_path: Path) -> None:
    result = run_job(job(journal(tmp_path, 50), budget_s=20.0), lambda _: None, SteppingClock(1.0), journal_rows)
    assert result["truncated"] is True
    assert result["reason"] == "time_budget"
    assert 0 < result["events"] < result["of"] == 50
    assert result["hits"]["notify_low_balance"]["candidate"] == result["events"]


def test_a_backtest_reads_a_journal_across_its_segments_and_an_old_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records in a journal written before segments, then in three segment files, read in
    chunks smaller than a segment: each once, in order, however the chunks fall."""
    monkeypatch.setattr(embedded_backtest, "READ_CHUNK", 7)
    path = tmp_path / "journal.db"
    now = time.time()
    updates = [
        validate_event(msgspec.json.encode(event("balance.updated", customer_id=f"cus_{i}", balance="70.00")), now)
        for i in range(40)
    ]
    write_legacy_journal(path, 4, [(e, now) for e in updates[:10]])
    log = SqliteLog(path, 4, segment_s=1.0)
    for n, start in enumerate(range(10, 40, 10)):
        log.append(updates[start : start + 10], now + 2 * n)  # a segment each
    assert len(log.segments()) == 4
    total, rows = journal_rows(job(path, after=3, limit=30))
    offsets = [offset for offset, *_ in rows]
    assert (total, offsets) == (30, list(range(4, 34)))
    result = run_job(job(path), lambda _: None, time.monotonic, journal_rows)
    assert result["hits"]["notify_low_balance"] == {"live": 0, "candidate": 40}


def test_a_stored_event_that_does_not_decode_is_counted_not_fatal(tmp_path: Path) -> None:
    path = journal(tmp_path, 3)
    segment = SqliteLog(path, 4).segment_path(1)  # the journal's one segment, offsets 1-3
    with sqlite3.connect(segment) as conn:
        conn.execute(
            "INSERT INTO journal (offset, partition, source, event_id, ingested_at, body) "
            "VALUES (4, 0, 's', 'e', 0, x'00')"
        )
    result = run_job(job(path), lambda _: None, time.monotonic, journal_rows)
    assert (result["events"], result["failed_events"]) == (4, 1)
    assert result["hits"]["notify_low_balance"]["candidate"] == 3


def test_a_producers_retry_the_workers_drop_is_not_replayed(tmp_path: Path) -> None:
    """The kafka events topic can hold a retry as a record of its own; the workers drop one that
    arrives within their window of the first copy (``kafka_dedup_window_s``), and take a later
    one as new: a back-test does the same. (The embedded journal refuses such retries.)"""
    path = journal(tmp_path, 3)

    def with_retries(j: backtest.BacktestJob) -> tuple[int, backtest.Rows]:
        total, rows = journal_rows(j)
        kept = list(rows)
        (o1, p1, at1, b1), (o2, p2, at2, b2) = kept[:2]
        return total + 2, iter([*kept, (o1 + 100, p1, at1 + 599, b1), (o2 + 100, p2, at2 + 601, b2)])

    kafka = backtest.KafkaSource({}, "events", [], 40, retries_within_s=600.0)
    result = run_job(msgspec.structs.replace(job(path), kafka=kafka), lambda _: None, time.monotonic, with_retries)
    assert (result["events"], result["duplicate_events"], result["failed_events"]) == (5, 1, 0)
    assert result["hits"]["notify_low_balance"]["candidate"] == 4  # the late retry runs, as in the workers
    embedded = run_job(job(path), lambda _: None, time.monotonic, with_retries)
    assert (embedded["duplicate_events"], embedded["hits"]["notify_low_balance"]["candidate"]) == (0, 5)


def test_the_child_process_streams_progress_then_the_result(tmp_path: Path) -> None:
    async def collect() -> list[dict[str, Any]]:
        return [line async for line in run_in_child(job(journal(tmp_path, 20)), CHILD_MODULE)]

    lines = run(collect())
    assert "progress" in lines[0]
    assert lines[-1]["result"]["hits"]["notify_low_balance"] == {"live": 0, "candidate": 20}


def test_closing_the_stream_stops_the_child_at_once(tmp_path: Path) -> None:
    path = journal(tmp_path, 5_000)

    async def first_line_then_close() -> float:
        lines = run_in_child(job(path, limit=5_000), CHILD_MODULE)
        first = await anext(lines)
        assert "progress" in first
        assert len(backtest_children()) == 1
        started = time.monotonic()
        await lines.aclose()  # kills the child and reaps it
        return time.monotonic() - started

    assert run(first_line_then_close()) < 2.0
    assert backtest_children() == []


def test_the_child_gets_no_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.example/secret")  # a receiver's secret_env
    monkeypatch.setenv("RINGFENCE_SECRET_AUDIT_KEY", "k" * 32)
    path = journal(tmp_path, 1)

    async def child_environment() -> bytes:
        lines = run_in_child(job(path), CHILD_MODULE)
        await anext(lines)
        (pid,) = backtest_children()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        await lines.aclose()
        return environ

    environ = run(child_environment())
    assert b"SLACK_WEBHOOK_URL" not in environ
    assert b"RINGFENCE_" not in environ
    assert b"PATH=" in environ


@pytest.mark.serial  # 1.5 s
def test_a_wedged_child_whose_reader_stalls_is_killed_at_its_deadline_and_reaped_before_on_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader stops at a yield (a client that reads nothing) and the child makes no progress
    (stopped: no CPU, so no CPU limit ends it): the kill timer alone ends it, and ``on_exit``
    (which frees the API's slot) runs only once the child is gone from the process table."""
    budget, grace = 1.0, 0.5
    monkeypatch.setattr(backtest, "GRACE_S", grace)
    path = journal(tmp_path, 5_000)
    still_in_process_table: list[bool] = []

    async def stall() -> tuple[float, int | None]:
        started = time.monotonic()
        child = await start_child(
            job(path, limit=5_000, budget_s=budget),
            CHILD_MODULE,
            on_exit=lambda: still_in_process_table.append(Path(f"/proc/{child.process.pid}").exists()),
        )
        lines = child.lines()
        assert "progress" in await anext(lines)  # and never another anext: the reader stalls here
        os.kill(child.process.pid, signal.SIGSTOP)
        await asyncio.wait_for(asyncio.shield(child.exited), budget + grace + 5)
        elapsed = time.monotonic() - started
        with pytest.raises(BacktestFailed, match="overran its budget"):
            _ = [line async for line in lines]  # progress lines written before the stop, then the end
        return elapsed, child.process.returncode

    elapsed, returncode = run(stall())
    assert budget + grace - 0.1 <= elapsed < budget + grace + 1.5
    assert returncode == -signal.SIGKILL
    assert still_in_process_table == [False]  # reaped, not a zombie, when the slot is freed
    assert backtest_children() == []


def test_a_ringfence_package_in_the_working_directory_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m`` would put the cwd first on sys.path; the child runs ``-I`` in ``/``."""
    path = journal(tmp_path, 3)
    marker = tmp_path / "fake-ringfence-imported"
    fake = tmp_path / "cwd" / "ringfence"
    (fake / "runtimes" / "embedded").mkdir(parents=True)
    for module in (
        fake / "__init__.py",
        fake / "runtimes" / "__init__.py",
        fake / "runtimes" / "backtest.py",
        fake / "runtimes" / "embedded" / "__init__.py",
        fake / "runtimes" / "embedded" / "backtest.py",
    ):
        module.write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(fake.parent)
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))  # and nothing from PYTHON* variables either
    relative = os.path.relpath(path)  # a relative journal path still names the same file

    async def collect() -> list[dict[str, Any]]:
        return [line async for line in run_in_child(job(Path(relative)), CHILD_MODULE)]

    lines = run(collect())
    assert lines[-1]["result"]["hits"]["notify_low_balance"] == {"live": 0, "candidate": 3}
    assert not marker.exists()


def test_the_child_runs_isolated_in_the_root_directory(tmp_path: Path) -> None:
    path = journal(tmp_path, 20_000)  # enough work that the child is still running when looked at

    async def inspect() -> tuple[list[bytes], str]:
        lines = run_in_child(job(path), CHILD_MODULE)
        await anext(lines)
        (pid,) = backtest_children()
        seen = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"), os.readlink(f"/proc/{pid}/cwd")
        await lines.aclose()
        return seen

    cmdline, cwd = run(inspect())
    assert cmdline[1:4] == [b"-I", b"-m", CHILD_MODULE.encode()]
    assert cwd == "/"
