"""A kafka task's changelog (one entry per batch, snapshots written behind, the log trimmed
before a complete one) restores exactly the state of the engine that wrote it: through
several snapshots, a commit that failed mid-snapshot, and the records a trim deleted."""

from __future__ import annotations

import msgspec
import pytest

from ringfence.bench.differential import default_packs, simulated
from ringfence.engine.engine import Engine
from ringfence.engine.packed import StateRow, pack_rows
from ringfence.runtimes.kafka.changelog import Entry, Part, Replayed, TaskLog, replay
from tests.helpers.differential import engine_factory, every_state_row

PACK = dict(default_packs())["default"]
BATCH = 40


def restored(kind: str, replayed: Replayed, marks: dict[int, float]) -> Engine:
    engine = engine_factory(kind)(PACK)
    for packed in replayed.engine:
        engine.restore_packed(packed)
    engine.restore((), marks)
    engine.take_changes()
    return engine


def own_rows(own: dict[tuple[str, str], bytes], changed: list[StateRow]) -> list[StateRow]:
    """Every row of the task's own after ``changed`` (not applied to ``own`` yet)."""
    rows = dict(own)
    for name, key, value in changed:
        if value is None:
            rows.pop((name, key), None)
        else:
            rows[(name, key)] = value
    return [(n, k, v) for (n, k), v in rows.items()]


@pytest.mark.parametrize("kind", ["python", "native"])
def test_the_changelog_restores_the_engine_through_snapshots_a_failed_commit_and_trims(kind: str) -> None:
    events = list(simulated(5, 8_000, 1_500, 5.0)[0])
    live = engine_factory(kind)(PACK)
    log = TaskLog(min_log_rows=2_000)
    kept: list[tuple[int, Entry]] = []  # the changelog partition: what trims left of it
    written = 0  # the next offset
    own: dict[tuple[str, str], bytes] = {}  # the task's own rows, as the changelog must hold them
    trims, failures_mid_snapshot, reloaded_mid_snapshot = 0, 0, False
    for number, start in enumerate(range(0, len(events), BATCH)):
        batch = events[start : start + BATCH]
        for offset, event in enumerate(batch, start):
            live.process(event, offset, 0, event.occurred_at)
        changed: list[StateRow] = [("@seen", f"b{number}", f"ids {number}".encode())]
        if number >= 5:
            changed.append(("@seen", f"b{number - 5}", None))  # forgotten
        log.take(live, changed)
        entry = log.entry(live, lambda changed=changed: own_rows(own, changed), len(own), tainted=False)
        mid_snapshot = entry is not None and entry.part is not None and not entry.part.last
        if number % 13 == 12 or (mid_snapshot and not failures_mid_snapshot):
            # the transaction fails: the worker restores the task and runs the batch again
            failures_mid_snapshot += mid_snapshot
            log.abandon()
            replayed = replay(kept)
            live = restored(kind, replayed, live.max_event_time)
            log = TaskLog.resumed(replayed, 2_000)
            for offset, event in enumerate(batch, start):
                live.process(event, offset, 0, event.occurred_at)
            log.take(live, changed)
            entry = log.entry(live, lambda changed=changed: own_rows(own, changed), len(own), tainted=False)
        for name, key, value in changed:
            if value is None:
                own.pop((name, key), None)
            else:
                own[(name, key)] = value
        if entry is not None:
            kept.append((written, entry))
            log.delivered(written)
            written += 1
        if (before := log.committed(entry)) is not None:
            kept = [(o, e) for o, e in kept if o >= before]
            trims += 1
        if number % 25 == 24:
            live.expire(batch[-1].occurred_at - 600)  # states drop, snapshots or not
        if not reloaded_mid_snapshot and number > 60 and entry is not None and entry.part and not entry.part.last:
            live = live.reloaded(PACK)  # a pack activated between batches: the worker's reload
            log.abandon()
            reloaded_mid_snapshot = True

    assert trims >= 3
    assert failures_mid_snapshot >= 1
    assert reloaded_mid_snapshot
    assert len(kept) < written / 2  # a restore reads what the last snapshot left, not the history
    replayed = replay(kept)
    assert every_state_row(restored(kind, replayed, live.max_event_time)) == every_state_row(live)
    assert replayed.own == own


def test_replay_takes_the_newest_complete_snapshot_and_every_entry_after_its_start() -> None:
    def rows(**states: int | None) -> bytes:
        return pack_rows([("count#1", k, None if v is None else str(v).encode()) for k, v in states.items()])

    entries = [
        Entry(1, [rows(a=1, z=1)], 2),
        Entry(2, [rows(b=1)], 1, part=Part(1, 1, 0, True, rows(a=1, b=1, z=1), 3, pack_rows([("@seen", "x", b"1")]))),
        Entry(3, [rows(a=2, z=None)], 2, own=pack_rows([("@seen", "y", b"2")])),
        Entry(4, [rows(c=1)], 1, part=Part(2, 3, 0, False, rows(a=2, b=1), 2)),  # its owner died before the end
        Entry(5, [rows(b=3)], 1, part=Part(3, 4, 0, False, rows(a=2, b=1), 2)),
        Entry(6, [], 0, part=Part(3, 4, 1, False, rows(c=1), 1)),  # not last: incomplete too
    ]
    replayed = replay(list(enumerate(entries, 100)))
    assert replayed.state_rows() == {("count#1", k): v for k, v in {"a": b"2", "b": b"3", "c": b"1"}.items()}
    assert replayed.own == {("@seen", "x"): b"1", ("@seen", "y"): b"2"}
    assert (replayed.head, replayed.gen, replayed.since, replayed.trim_before) == (6, 3, 1, 101)
    assert replayed.logged == 5  # rows of the entries after the snapshot's start: the next one is due by them
    # read again from the start of a log trimmed meanwhile (its reader restarted there): the same
    assert replay([*enumerate(entries, 100), *enumerate(entries[1:], 101)]) == replayed
    # no complete snapshot: everything from the first entry
    assert replay(list(enumerate(entries[:1], 100))).state_rows() == {("count#1", "a"): b"1", ("count#1", "z"): b"1"}
    assert replay(list(enumerate(entries[:1], 100))).trim_before is None
    # a log that lacks entries it needs is not restored from
    with pytest.raises(RuntimeError, match="lacks entries after 0"):
        replay(list(enumerate(entries[2:], 102)))
    with pytest.raises(RuntimeError, match="lacks entries after 1"):
        replay([(100 + i, e) for i, e in enumerate(entries) if e.seq != 4])


def test_a_snapshot_carries_the_tasks_own_rows_in_slices_and_ends_with_the_last() -> None:
    engine = Engine(PACK, 5.0)
    own: list[StateRow] = [("@seen", f"batch-{i}", bytes(40_000)) for i in range(40)]  # 1.6 MB: three slices

    def logged(log: TaskLog) -> Entry:
        """The first batch: it wrote the task's own rows, so a snapshot is due after it."""
        log.take(engine, own)
        first = log.entry(engine, lambda: own, len(own), tainted=False)
        assert first is not None
        assert first.part is None
        log.committed(first)
        return first

    log = TaskLog(min_log_rows=1)
    entries = [(0, logged(log))]
    parts = []
    while not parts or not parts[-1].last:
        entry = log.entry(engine, lambda: own, len(own), tainted=False)
        assert entry is not None
        assert entry.part is not None
        log.delivered(entry.seq * 10)
        trim = log.committed(entry)
        entries.append((entry.seq * 10, entry))
        parts.append(entry.part)
    assert trim == 20  # the first part's entry
    assert [p.index for p in parts] == [0, 1, 2]  # slices of about 512 KiB
    assert max(len(p.own) for p in parts) < 700_000
    assert replay(entries).own == {(n, k): v for n, k, v in own}
    assert replay([e for e in entries if e[0] >= trim]).own == replay(entries).own

    # a task whose fold failed writes no part, and the generation under way is given up
    log = TaskLog(min_log_rows=1)
    logged(log)
    begun = log.entry(engine, lambda: own, len(own), tainted=False)
    assert begun is not None
    assert begun.part is not None
    assert (begun.part.gen, begun.part.index) == (1, 0)
    log.committed(begun)
    assert log.entry(engine, lambda: own, len(own), tainted=True) is None
    again = log.entry(engine, lambda: own, len(own), tainted=False)
    assert again is not None
    assert again.part is not None
    assert (again.part.gen, again.part.index) == (2, 0)


def test_tasks_sharing_a_changelog_partition_trim_it_to_what_the_least_advanced_one_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every stage's task *p* writes changelog partition *p*: a task that completed a snapshot
    may not trim the entries another task of the partition still needs (it has none yet), and
    a restore replays each task from its own entries and trims what no task needs, entries of
    a stage the pack no longer has included."""
    from ringfence.config import Settings
    from ringfence.engine.stages import CUSTOMER, JOIN, plan_stages
    from ringfence.runtimes.kafka import restore
    from ringfence.runtimes.kafka.topics import topics_of

    engine = Engine(PACK, 5.0)
    own: list[StateRow] = [("@test", "row", b"1")]  # a task's own row (none a task reads back)
    partition: list[tuple[int, Entry]] = []

    def commit(log: TaskLog, stage: str) -> int | None:
        log.take(engine, own)
        entry = log.entry(engine, lambda: own, len(own), tainted=False)
        assert entry is not None
        partition.append((len(partition), msgspec.structs.replace(entry, stage=stage)))
        log.delivered(len(partition) - 1)
        return log.committed(entry)

    snapshotting, behind = TaskLog(min_log_rows=1), TaskLog(min_log_rows=10**9)
    assert commit(snapshotting, CUSTOMER) is None  # offset 0
    assert commit(behind, "card_id") is None  # offset 1: its first, it never snapshots
    assert commit(snapshotting, CUSTOMER) == 2  # a complete snapshot at 2: the customer needs nothing before
    assert (snapshotting.keep_from, behind.keep_from) == (2, 1)
    assert restore.trim_point([snapshotting, behind]) == 1  # the card task's first entry stays
    assert restore.trim_point([TaskLog(min_log_rows=1)]) is None

    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python")
    topics = topics_of(settings)
    plan = plan_stages(PACK)
    gone = Entry(1, [], 0, own=pack_rows([("@test", "old", b"x")]), own_rows=1, stage="a-stage-no-longer-run")
    held = [(0, gone), *[(offset + 1, entry) for offset, entry in partition]]
    monkeypatch.setattr(restore, "read_changelogs", lambda *args: {(topics.changelog, 3): held})
    ids = [(CUSTOMER, 3), ("card_id", 3), (JOIN, 3)]
    # the store's pack is this one: a stage it does not run was dropped, and so are its entries
    tasks, _, trims, pinned = restore.restore_tasks(settings, topics, plan, ids, {}, 0.0, others_kept=False)
    assert set(tasks) == set(ids)
    assert trims == {(topics.changelog, 3): 2}  # the gone stage's entry and the customer's before its snapshot
    assert pinned == {}
    # the store's pack is another (or cannot be read): it may run that stage, whose entries stay
    _, _, trims, pinned = restore.restore_tasks(settings, topics, plan, ids, {}, 0.0, others_kept=True)
    assert (trims, pinned) == ({}, {3: 0})
    # a stage not asked for whose entries have a gap keeps them all; one asked for fails the restore
    gap = Entry(3, [], 0, own=pack_rows([("@test", "x", b"1")]), own_rows=1, stage="ip")
    with_gap = [(0, gap), *((offset + 1, entry) for offset, entry in held)]  # ip's entry 3, without 1 and 2
    monkeypatch.setattr(restore, "read_changelogs", lambda *args: {(topics.changelog, 3): with_gap})
    _, _, trims, _ = restore.restore_tasks(settings, topics, plan, ids, {}, 0.0, others_kept=False)
    assert trims == {}  # from ip's entry (the first) on, nothing is deleted
    with pytest.raises(RuntimeError, match="lacks entries"):
        restore.restore_tasks(settings, topics, plan, [("ip", 3)], {}, 0.0, others_kept=False)
    assert (tasks[(CUSTOMER, 3)].log.head, tasks[("card_id", 3)].log.head, tasks[(JOIN, 3)].log.head) == (2, 1, 0)
    assert (tasks[(CUSTOMER, 3)].log.keep_from, tasks[("card_id", 3)].log.keep_from) == (3, 2)
