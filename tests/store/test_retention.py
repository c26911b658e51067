"""Retention over offset-keyed tables stamped in offset order (the journal, late events):
bounded slices, oldest first, never a row before its time or beyond the processed offset,
and no scan of the rows it keeps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.store.retention import delete_oldest


def table(path: Path, stamps: dict[int, float]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE late_events (offset INTEGER PRIMARY KEY, ingested_at REAL NOT NULL, pad TEXT)")
    with conn:  # one transaction
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO late_events VALUES (?, ?, 'x')", sorted(stamps.items()))
    return conn


def left(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT offset FROM late_events ORDER BY offset")]


def test_slices_take_the_oldest_rows_first_and_stop_at_the_cut_off_and_the_processed_offset(tmp_path: Path) -> None:
    conn = table(tmp_path / "t.db", {o: float(o) for o in range(1, 21)})  # row o stamped at o s
    assert delete_oldest(conn, "late_events", 15.0, 12, 5) == 5
    assert left(conn)[:2] == [6, 7]
    assert delete_oldest(conn, "late_events", 15.0, 12, 5) == 5
    assert delete_oldest(conn, "late_events", 15.0, 12, 5) == 2  # 11, 12: 13 is not processed
    assert left(conn) == list(range(13, 21))
    assert delete_oldest(conn, "late_events", 15.0, 20, 5) == 2  # 13, 14: 15 is not old enough
    assert delete_oldest(conn, "late_events", 15.0, 20, 5) == 0
    assert left(conn) == list(range(15, 21))


def test_an_empty_table_and_gaps_in_the_offsets(tmp_path: Path) -> None:
    conn = table(tmp_path / "t.db", {})
    assert delete_oldest(conn, "late_events", 100.0, 10, 5) == 0
    conn.executemany("INSERT INTO late_events VALUES (?, ?, 'x')", [(3, 1.0), (40, 2.0), (900, 3.0), (901, 50.0)])
    assert delete_oldest(conn, "late_events", 10.0, 1000, 5) == 3
    assert left(conn) == [901]


def test_a_row_stamped_out_of_order_is_never_dropped_before_its_time(tmp_path: Path) -> None:
    # the wall clock stepped back: row 3 is stamped later than the rows after it
    conn = table(tmp_path / "t.db", {1: 1.0, 2: 2.0, 3: 90.0, 4: 3.0, 5: 4.0, 6: 95.0})
    while delete_oldest(conn, "late_events", 10.0, 6, 1) == 1:
        pass
    assert left(conn) == [3, 6]
    assert delete_oldest(conn, "late_events", 91.0, 6, 10) == 1
    assert left(conn) == [6]


@pytest.mark.parametrize(("name", "max_rows"), [("alerts", 5), ("late_events", 0), ("late_events", -1)])
def test_another_table_or_no_bound_is_refused(tmp_path: Path, name: str, max_rows: int) -> None:
    conn = table(tmp_path / "t.db", {1: 1.0})
    with pytest.raises(ValueError, match="retention of"):
        delete_oldest(conn, name, 10.0, 1, max_rows)  # type: ignore[arg-type]
    assert left(conn) == [1]


def test_rows_that_are_kept_are_not_scanned(tmp_path: Path) -> None:
    young = 100_000
    conn = table(tmp_path / "t.db", {o: (1.0 if o <= 10 else 1000.0) for o in range(1, young + 11)})
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    conn.set_progress_handler(count, 100)  # every 100 virtual machine instructions
    assert delete_oldest(conn, "late_events", 500.0, young + 10, 1000) == 10
    assert steps < 200, "retention read the young rows"  # a scan of them takes thousands
    conn.set_progress_handler(None, 0)
    steps = 0
    conn.set_progress_handler(count, 100)
    conn.execute("SELECT count(*) FROM late_events WHERE ingested_at < 500.0").fetchone()
    assert steps > 2000  # what a scan costs, for comparison


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.floats(-5.0, 20.0), min_size=0, max_size=60),
    gaps=st.lists(st.integers(1, 4), min_size=60, max_size=60),
    before=st.floats(0.0, 300.0),
    up_to=st.integers(0, 200),
    max_rows=st.integers(1, 7),
)
def test_it_drops_only_old_processed_rows_and_all_of_them_when_stamps_are_in_order(
    steps: list[float], gaps: list[int], before: float, up_to: int, max_rows: int
) -> None:
    stamps: dict[int, float] = {}
    offset, stamp = 0, 0.0
    for step, gap in zip(steps, gaps, strict=False):
        offset, stamp = offset + gap, stamp + step
        stamps[offset] = stamp
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE journal (offset INTEGER PRIMARY KEY, ingested_at REAL NOT NULL)")
    conn.executemany("INSERT INTO journal VALUES (?, ?)", sorted(stamps.items()))
    while (deleted := delete_oldest(conn, "journal", before, up_to, max_rows)) == max_rows:
        pass
    assert deleted < max_rows
    kept = {row[0] for row in conn.execute("SELECT offset FROM journal")}
    dropped = set(stamps) - kept
    assert all(o <= up_to and stamps[o] < before for o in dropped)  # never early, never unprocessed
    if all(b >= a for a, b in zip(list(stamps.values()), list(stamps.values())[1:], strict=False)):
        assert dropped == {o for o, s in stamps.items() if o <= up_to and s < before}  # in order: all of them
