"""Engine state through the changelog: merged in memory, frozen, written behind in slices,
the changelog truncated; recovery equals the last committed state wherever a crash falls."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ringfence.store import Checkpoint, SqliteStore
from ringfence.store import state_log as state_log_module


@pytest.fixture(autouse=True)
def small_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_log_module, "MIN_ROWS_PER_COMMIT", 3)
    monkeypatch.setattr(state_log_module, "ROWS_PER_CHANGE", 0.0)
    monkeypatch.setattr(state_log_module, "FREEZE_ROWS", 5)
    monkeypatch.setattr(state_log_module, "FREEZE_AGE_S", 60.0)


def rows(store: SqliteStore, table: str) -> int:
    return int(store.conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def reopened(path: Path) -> dict[tuple[str, str], bytes]:
    fresh = SqliteStore(path)
    try:
        return {(f, k): s for f, k, s in fresh.iter_feature_state()}
    finally:
        fresh.close()


def test_changes_reach_feature_state_in_slices_and_the_changelog_is_truncated(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.commit_batch([], Checkpoint("p", 1, [("f", f"k{i}", b"a") for i in range(6)]), now=1.0)
    assert rows(store, "state_log") == 1
    assert rows(store, "feature_state") == 0  # frozen (6 >= 5 rows), not yet written
    store.commit_batch([], Checkpoint("p", 2, [("f", "k0", b"b")]), now=2.0)
    assert rows(store, "feature_state") == 3  # one slice
    store.commit_batch([], Checkpoint("p", 3), now=3.0)
    assert rows(store, "feature_state") == 6  # the last slice...
    assert rows(store, "state_log") == 1  # ...and the changelog through the freeze is gone; k0=b stays
    assert reopened(tmp_path / "s.db")[("f", "k0")] == b"b"


def test_age_freezes_a_small_set_and_deletes_are_written_too(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.commit_batch([], Checkpoint("p", 1, [("f", "a", b"1"), ("f", "b", b"1")]), now=0.0)
    store.commit_batch([], Checkpoint("p", 2, [("f", "a", None)]), now=61.0)  # the set is 61 s old: frozen
    store.commit_batch([], Checkpoint("p", 3), now=62.0)
    assert list(store.conn().execute("SELECT feature, key, state FROM feature_state")) == [("f", "b", b"1")]
    assert rows(store, "state_log") == 0
    assert reopened(tmp_path / "s.db") == {("f", "b"): b"1"}


def test_recovery_equals_the_committed_state_after_any_number_of_batches(tmp_path: Path) -> None:
    """A model check: random changes over few keys; after every batch, a reopened store
    (as after a kill -9 there) holds exactly the latest committed value of every key."""
    rng = random.Random(7)
    store = SqliteStore(tmp_path / "s.db")
    expected: dict[tuple[str, str], bytes] = {}
    for batch in range(1, 60):
        changes: list[tuple[str, str, bytes | None]] = []
        for _ in range(rng.randint(0, 4)):
            key = ("f" if rng.random() < 0.7 else "g", f"k{rng.randint(0, 7)}")
            value = None if rng.random() < 0.2 else f"v{batch}".encode()
            changes.append((*key, value))
        store.commit_batch([], Checkpoint("p", batch, changes), now=float(batch))
        for f, k, v in changes:
            if v is None:
                expected.pop((f, k), None)
            else:
                expected[(f, k)] = v
        assert reopened(tmp_path / "s.db") == expected, batch
    assert rows(store, "state_log") < 59  # it was truncated along the way


def test_a_failed_commit_neither_merges_its_changes_nor_loses_a_slice(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.commit_batch([], Checkpoint("p", 1, [("f", f"k{i}", b"a") for i in range(6)]), now=1.0)
    with pytest.raises(TypeError):
        store.commit_batch([], Checkpoint("p", 2, [("f", "x", object())]), now=2.0)  # type: ignore[list-item]
    for offset in (3, 4):
        store.commit_batch([], Checkpoint("p", offset), now=float(offset))
    assert rows(store, "feature_state") == 6  # both slices written after the failure
    assert ("f", "x") not in reopened(tmp_path / "s.db")


def test_idle_steps_write_the_frozen_set_and_truncate_the_changelog(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.commit_batch([], Checkpoint("p", 1, [("f", f"k{i}", b"a") for i in range(6)]), now=1.0)  # frozen
    assert store.write_state_behind(now=2.0, rows=4)
    assert rows(store, "feature_state") == 4
    assert store.write_state_behind(now=3.0, rows=4)
    assert rows(store, "feature_state") == 6
    assert rows(store, "state_log") == 0
    assert not store.write_state_behind(now=4.0)  # nothing left behind


def test_dropping_definitions_flushes_everything_first(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.commit_batch([], Checkpoint("p", 1, [("keep", f"k{i}", b"1") for i in range(6)]), now=1.0)  # frozen
    store.commit_batch([], Checkpoint("p", 2, [("keep", "k0", None), ("drop", "k", b"1")]), now=2.0)  # pending
    assert store.keep_only_states({"keep"}) == 1
    assert rows(store, "state_log") == 0
    assert reopened(tmp_path / "s.db") == {("keep", f"k{i}"): b"1" for i in range(1, 6)}
