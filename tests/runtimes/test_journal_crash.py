"""The segmented journal under kill -9 and under two writers: whatever the moment of the
kill (a roll of a segment included), every acknowledged event is kept once, and offsets stay
dense across segments."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

from ringfence.events import decode_event
from ringfence.runtimes.embedded.journal import SqliteLog
from tests.helpers.journal import append_batches

BATCHES = 400
KILLS = 8  # each after 1-30 batches: all of them before the last batch
SPAN_S = 0.02  # a new segment every few appends: kills land in rolls too


def last_acked(acked: Path) -> int:
    lines = acked.read_text().split() if acked.exists() else []
    return int(lines[-1]) if lines else -1


def check_journal(path: Path, expected: set[str]) -> None:
    log = SqliteLog.open_read_only(path)
    records = log.read(0, 100_000)
    ids = Counter(decode_event(r.body).event_id for r in records)
    assert [r.offset for r in records] == list(range(1, len(records) + 1))  # dense, none reused
    assert log.count() == len(records)  # no record hidden in another segment under a used offset
    assert set(ids) == expected
    assert max(ids.values()) == 1
    assert len(log.segments()) > 10


def test_kill_9_at_any_moment_keeps_every_acknowledged_event_once(tmp_path: Path) -> None:
    path, acked = tmp_path / "journal.sqlite3", tmp_path / "acked"
    spawn = multiprocessing.get_context("spawn")
    chance = random.Random(3)
    kills = 0
    while last_acked(acked) < BATCHES - 1:
        # an at-least-once producer: it sends again from the first batch not acknowledged
        first = last_acked(acked) + 1
        child = spawn.Process(target=append_batches, args=(str(path), first, BATCHES - 1, "e", str(acked), SPAN_S))
        child.start()
        if kills < KILLS:
            # after a few more acknowledgements, and a moment into the next append
            until = first + chance.randint(1, 30)
            deadline = time.monotonic() + 60
            while last_acked(acked) < until and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(chance.uniform(0, 0.01))
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.join(120)
        assert child.exitcode in (0, -signal.SIGKILL)
    assert kills == KILLS
    check_journal(path, {f"e-{b}-{n}" for b in range(BATCHES) for n in range(10)})


def test_two_writers_at_once_never_share_an_offset_and_each_gets_its_turn(tmp_path: Path) -> None:
    """A worker left over from a killed server may append while its successor starts: the one
    without the duplicate index is refused until the other lets go of it (exits), and sends
    again; every event of both lands once."""
    path = tmp_path / "journal.sqlite3"
    SqliteLog(path, 2).close()
    spawn = multiprocessing.get_context("spawn")
    writers = [
        spawn.Process(target=append_batches, args=(str(path), 0, 149, name, str(tmp_path / name), SPAN_S))
        for name in ("a", "b")
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    check_journal(path, {f"{name}-{b}-{n}" for name in ("a", "b") for b in range(150) for n in range(10)})
