"""Engine state through the changelog and the snapshots written behind it: recovery equals the
last committed state wherever a crash falls, the changelog and old snapshots are retired, a
store from before snapshots restores and is retired by the first one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ringfence.engine.packed import StateRow, pack_rows
from ringfence.store import Checkpoint, SqliteStore
from ringfence.store import state_log as state_log_module
from tests.helpers.store import DictState


@pytest.fixture(autouse=True)
def small_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_log_module, "MIN_LOG_ROWS", 6)
    monkeypatch.setattr(state_log_module, "LOG_PER_STATE", 0.0)
    monkeypatch.setattr(state_log_module, "PART_ROWS_PER_CHANGE", 1)
    monkeypatch.setattr(state_log_module, "MIN_PART_ROWS", 2)
    monkeypatch.setattr(state_log_module, "IDLE_PART_ROWS", 3)
    monkeypatch.setattr(state_log_module, "SWEEP_BYTES_PER_WRITTEN", 0)  # a slice by rows only


def count(store: SqliteStore, table: str) -> int:
    return int(store.conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def commit(store: SqliteStore, engine: DictState, offset: int, rows: list[StateRow]) -> None:
    """A batch as the processor commits it: its changes, and the snapshot part due with them."""
    changes = [engine.apply(rows)] if rows else []
    part = store.states.next_part(engine, len(rows), sum(len(c) for c, _ in changes))
    store.commit_batch([], Checkpoint("p", offset, [c for c, _ in changes], state_rows=len(rows), snapshot=part), 1.0)


def reopened(path: Path) -> dict[tuple[str, str], bytes]:
    """The state a restart restores (a fresh store on the file, as after a kill -9)."""
    fresh, engine = SqliteStore(path), DictState()
    try:
        fresh.restore_state(engine)
        return engine.rows
    finally:
        fresh.close()


def test_recovery_equals_the_committed_state_after_any_number_of_batches(tmp_path: Path) -> None:
    """A model check: random changes and drops over few keys, snapshots begun and finished in
    between; after every batch a reopened store holds exactly the state in memory."""
    rng = random.Random(7)
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    for batch in range(1, 120):
        rows: list[StateRow] = []
        for _ in range(rng.randint(0, 4)):
            name, key = ("f" if rng.random() < 0.7 else "g"), f"k{rng.randint(0, 11)}"
            rows.append((name, key, None if rng.random() < 0.2 else f"v{batch}".encode()))
        commit(store, engine, batch, rows)
        if rng.random() < 0.1:
            store.snapshot_step(engine)  # an idle step between batches
        assert reopened(tmp_path / "s.db") == engine.rows, batch
    assert count(store, "snapshots WHERE complete = 1") == 1
    assert count(store, "state_log") < 40  # retired along the way


def test_a_finished_snapshot_retires_the_changelog_before_it_and_the_older_snapshot(tmp_path: Path) -> None:
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    commit(store, engine, 1, [("f", f"k{i}", b"1") for i in range(6)])  # 6 rows logged: due
    commit(store, engine, 2, [("f", "k0", b"2")])  # begins generation 1 at seq 1, writes 2 rows
    assert count(store, "snapshots WHERE complete = 0") == 1
    commit(store, engine, 3, [("f", "k1", None)])
    while count(store, "snapshots WHERE complete = 1") == 0:
        assert store.snapshot_step(engine)
    assert list(store.conn().execute("SELECT gen, since FROM snapshots")) == [(1, 1)]
    assert [s for (s,) in store.conn().execute("SELECT seq FROM state_log")] == [2, 3]  # after since
    assert reopened(tmp_path / "s.db") == {("f", f"k{i}"): b"2" if i == 0 else b"1" for i in range(6) if i != 1}
    # the next generation, once due, replaces it
    for offset in range(5, 12):
        commit(store, engine, offset, [("g", f"x{offset}", b"3")])
    while count(store, "snapshots WHERE complete = 1 AND gen = 2") == 0:
        assert store.snapshot_step(engine)
    assert list(store.conn().execute("SELECT gen FROM snapshots")) == [(2,)]
    assert reopened(tmp_path / "s.db") == engine.rows  # generation 1's parts are not read
    while store.snapshot_step(engine):  # idle steps delete what is retired, then stop
        assert reopened(tmp_path / "s.db") == engine.rows
    assert {g for (g,) in store.conn().execute("SELECT gen FROM snapshot_parts")} == {2}
    (since,) = store.conn().execute("SELECT since FROM snapshots").fetchone()
    assert count(store, f"state_log WHERE seq <= {since}") == 0
    assert not store.states.sweeping


def test_retired_rows_are_deleted_a_bounded_slice_per_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation's parts and the changelog it retires go a few per commit, never all in the
    commit that completes the next one (that stalled the processor for a second)."""
    monkeypatch.setattr(state_log_module, "SWEEP_PARTS", 1)
    monkeypatch.setattr(state_log_module, "SWEEP_LOG_ENTRIES", 1)
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    offset = 0
    while count(store, "snapshots WHERE complete = 1") == 0 or count(store, "snapshot_parts") < 6:
        offset += 1
        commit(store, engine, offset, [("f", f"k{offset % 20}", str(offset).encode())])
    first, completions = offset, 0
    (newest,) = store.conn().execute("SELECT gen FROM snapshots WHERE complete = 1").fetchone()
    left = count(store, f"snapshot_parts WHERE gen < {newest}")
    for offset in range(first + 1, first + 120):  # the next generations complete meanwhile
        commit(store, engine, offset, [("f", f"k{offset % 20}", str(offset).encode())])
        (gen,) = store.conn().execute("SELECT max(gen) FROM snapshots WHERE complete = 1").fetchone()
        retired_parts = count(store, f"snapshot_parts WHERE gen < {gen}")
        if gen == newest:
            assert retired_parts >= left - 1  # one part at most went with this commit
        else:
            completions += 1
            assert retired_parts > 0  # not deleted in the commit that retired them
        newest, left = gen, retired_parts
        assert reopened(tmp_path / "s.db") == engine.rows
    assert completions >= 2
    while store.snapshot_step(engine):
        pass
    assert count(store, f"snapshot_parts WHERE gen < {newest}") == 0


def test_an_unfinished_generation_is_ignored_and_cleared_by_the_next(tmp_path: Path) -> None:
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    commit(store, engine, 1, [("f", f"k{i}", b"1") for i in range(8)])
    commit(store, engine, 2, [("f", "k0", None)])  # generation 1: a first part only
    assert count(store, "snapshots WHERE complete = 0") == 1
    store.close()
    # a crash: the restart restores from the changelog alone, the part is not read
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    store.restore_state(engine)
    assert engine.rows == {("f", f"k{i}"): b"1" for i in range(1, 8)}
    while count(store, "snapshots WHERE complete = 1") == 0:
        assert store.snapshot_step(engine)  # due again at once: 9 rows logged
    assert list(store.conn().execute("SELECT gen FROM snapshots")) == [(2,)]
    while store.snapshot_step(engine):  # retired rows go a few at a time
        pass
    assert count(store, "state_log") == 0
    assert reopened(tmp_path / "s.db") == engine.rows


def test_a_failed_commit_does_not_count_its_part(tmp_path: Path) -> None:
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    commit(store, engine, 1, [("f", f"k{i}", b"1") for i in range(6)])
    part = store.states.next_part(engine, 2)
    assert part is not None
    assert part.index == 0
    unbindable = Checkpoint("p", 2, [object()], state_rows=1, snapshot=part)  # type: ignore[list-item]
    with pytest.raises(Exception, match=r"type|bind"):
        store.commit_batch([], unbindable, now=2.0)
    assert count(store, "snapshot_parts") == 0
    assert store.load_checkpoint("p")[0] == 1
    # the processor then restores (a fresh engine: no walk) and goes on
    engine = DictState()
    store.restore_state(engine)
    commit(store, engine, 2, [("f", "k9", b"2")])
    while count(store, "snapshots WHERE complete = 1") == 0:
        assert store.snapshot_step(engine)
    assert reopened(tmp_path / "s.db") == engine.rows


def test_a_whole_snapshot_after_a_reload_leaves_no_dropped_state_behind(tmp_path: Path) -> None:
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    commit(store, engine, 1, [("keep", "k", b"1"), ("drop", "k", b"1")])
    del engine.rows[("drop", "k")]  # the reloaded engine no longer holds it
    store.snapshot_all(engine)
    while store.snapshot_step(engine):  # retired rows go a few at a time
        pass
    assert count(store, "state_log") == 0
    assert reopened(tmp_path / "s.db") == {("keep", "k"): b"1"}


def test_a_store_from_before_snapshots_restores_and_is_retired_by_the_first(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    with store.transaction() as conn:  # as the former write-behind left it
        conn.executemany("INSERT INTO feature_state VALUES (?, ?, ?)", [("f", f"k{i}", b"old") for i in range(3)])
        changes = pack_rows([("f", "k0", None), ("f", "k1", b"new")])
        conn.execute("INSERT INTO state_log (changes) VALUES (?)", (changes,))
    store.close()
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    assert store.restore_state(engine) == 5
    assert engine.rows == {("f", "k1"): b"new", ("f", "k2"): b"old"}
    while count(store, "snapshots WHERE complete = 1") == 0:
        assert store.snapshot_step(engine)  # begun at once: the old rows are to go
    while store.snapshot_step(engine):  # retired rows go a few at a time
        pass
    assert count(store, "feature_state") == count(store, "state_log") == 0
    assert reopened(tmp_path / "s.db") == engine.rows


def test_a_restart_deletes_what_a_crash_left_retired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retired parts and changelog a crash left undeleted go after the restart, a slice per
    step, and the state restored before, during and after is the committed one."""
    monkeypatch.setattr(state_log_module, "SWEEP_PARTS", 1)
    monkeypatch.setattr(state_log_module, "SWEEP_LOG_ENTRIES", 1)
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    offset = 0
    while count(store, "snapshots WHERE complete = 1 AND gen >= 2") == 0:
        offset += 1
        commit(store, engine, offset, [("f", f"k{offset % 20}", str(offset).encode())])
    (newest, since) = store.conn().execute("SELECT gen, since FROM snapshots WHERE complete = 1").fetchone()
    left = count(store, f"snapshot_parts WHERE gen < {newest}") + count(store, f"state_log WHERE seq <= {since}")
    assert left > 2  # retired, not yet deleted
    store.close()  # a crash
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    store.restore_state(engine)
    assert store.states.sweeping
    steps = 0
    while store.snapshot_step(engine):
        steps += 1
        assert reopened(tmp_path / "s.db") == engine.rows
    assert steps >= left // 2
    assert count(store, f"snapshot_parts WHERE gen < {newest}") == count(store, f"state_log WHERE seq <= {since}") == 0


def test_a_few_large_states_changed_by_every_batch_begin_snapshots_by_bytes_and_the_store_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-test: each batch logs the whole of each state it changes, and a device's distinct
    customers of long ids are 512 KB; 20 of them changed by every batch grew the store by
    100 MB/s, and the rows counted never reached a snapshot before the disk was full."""
    monkeypatch.setattr(state_log_module, "MIN_LOG_ROWS", 10**9)
    monkeypatch.setattr(state_log_module, "MIN_LOG_BYTES", 200_000)
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    rng = random.Random(3)
    logged = 0
    for batch in range(1, 400):
        rows: list[StateRow] = [(f"f{i}", "fat", rng.randbytes(20_000)) for i in range(5)]  # 100 KB a batch
        commit(store, engine, batch, rows)
        logged += 100_000
        held = int(store.conn().execute("SELECT COALESCE(SUM(length(changes)), 0) FROM state_log").fetchone()[0])
        assert held < 600_000, (batch, held)  # not the 40 MB logged
    assert count(store, "snapshots WHERE complete = 1") == 1
    assert int(store.conn().execute("SELECT MAX(gen) FROM snapshots").fetchone()[0]) > 10
    assert reopened(tmp_path / "s.db") == engine.rows


def test_a_batch_changing_large_states_writes_a_part_of_the_snapshot_in_proportion_to_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot is written in half the log, by rows and by bytes: a batch changing a few large
    states wrote 2,000 small rows of it, so it took 5 s and 500 MB of log to finish."""
    monkeypatch.setattr(state_log_module, "MIN_LOG_ROWS", 10**9)
    monkeypatch.setattr(state_log_module, "MIN_LOG_BYTES", 1)
    monkeypatch.setattr(state_log_module, "LOG_BYTES_PER_SNAPSHOT_BYTE", 0.0)
    monkeypatch.setattr(state_log_module, "IDLE_PART_ROWS", 5_000)  # parts as large as a real one's
    monkeypatch.setattr(state_log_module, "PART_ROWS_PER_CHANGE", 2)
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    commit(store, engine, 1, [("small", f"k{i}", b"x" * 10) for i in range(10_000)])
    while count(store, "snapshots WHERE complete = 1") == 0:  # the first snapshot: its bytes a row
        assert store.snapshot_step(engine)
    commit(store, engine, 2, [("small", "k0", b"y" * 10)])  # logged since: a snapshot is due
    fat = [("fat", f"d{i}", random.Random(i).randbytes(20_000)) for i in range(5)]
    changes = engine.apply(fat)[0]
    part = store.states.next_part(engine, len(fat), len(changes))
    assert part is not None
    assert len(part.packed) >= 1.5 * len(changes)  # about twice the batch's bytes of the snapshot
    assert part.count > 100 * 2 * len(fat)  # not two rows a row changed


def test_retired_rows_are_deleted_by_bytes_as_fast_as_large_batches_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-test: two retired parts and two changelog entries a transaction, whatever their size,
    left 2.5 GB of retired generations behind 10 MB batches, 84 small parts of an older
    generation ahead of them. Retired rows go by bytes too: twice what a transaction writes."""
    monkeypatch.setattr(state_log_module, "SWEEP_BYTES_PER_WRITTEN", 2)
    store, engine = SqliteStore(tmp_path / "s.db"), DictState()
    with store.transaction() as conn:  # a retired generation: 30 small parts, then 3 large ones
        for part in range(33):
            conn.execute(
                "INSERT INTO snapshot_parts (gen, part, packed) VALUES (?, ?, ?)",
                (7, part, b"s" * 10 if part < 30 else b"L" * 80_000),
            )
    commit(store, engine, 1, [("f", "fat", random.Random(1).randbytes(60_000))])  # writes 60 KB
    left = [p for (p,) in store.conn().execute("SELECT part FROM snapshot_parts WHERE gen = 7 ORDER BY part")]
    assert left == [32]  # the small ones and two large ones: 160 KB, once past twice the 60 KB written
    commit(store, engine, 2, [("f", "fat", random.Random(2).randbytes(60_000))])
    assert count(store, "snapshot_parts WHERE gen = 7") == 0
    assert reopened(tmp_path / "s.db") == engine.rows
