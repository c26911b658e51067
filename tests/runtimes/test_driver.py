"""The processing driver every runtime runs on, with a runtime in memory: idle wall-clock
timers, late events, poison isolation and what one commit carries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from ringfence.engine import Engine, load_pack
from ringfence.engine.packed import unpack_rows
from ringfence.events import Event
from ringfence.runtimes.processing import Batch, Driver, EventClock, expiry_watermark
from ringfence.store.quarantine import QuarantinedEvent
from tests.helpers.factories import T0, ev

PACK = load_pack("""
version: d1
features:
  - name: logins
    by: customer_id
    agg: count
    on: [login.succeeded]
rules:
  - id: again
    on: [login.succeeded]
    when: logins >= 2
    severity: low
    audience: security
    title: "{customer_id} again"
    dedup: "{event_id}"
patterns:
  - id: silent
    kind: absence
    by: source
    within: 5m
    expect: {on: [login.succeeded]}
    severity: high
    audience: ops
    title: "{source} silent"
    dedup: "{source}"
""")


@dataclass(frozen=True)
class Rec:
    """A log record: ``poison`` makes folding it fail after the engine took it in."""

    offset: int
    partition: int
    event: Event
    ingested_at: float
    poison: bool = False


class Lost(OSError):
    """The store went away (a transient failure)."""


class Memory:
    """A runtime in memory: one engine over every partition; a committed copy of its state."""

    def __init__(self, now: float = T0) -> None:
        self.engine = Engine(PACK)
        self.event_time = EventClock(now, now)
        self.now = now
        self.offset = 0
        self.rows: dict[tuple[str, str], bytes] = {}
        self.marks: dict[int, float] = {}
        self.commits: list[Batch[Rec]] = []
        self.fail: list[Exception] = []  # raised by the next commits
        self.refused = ""  # an event whose alert the store refuses, as it would a value too big
        self.most: int | None = None  # records a commit takes at most (more: refused, as the kafka worker's too large)
        self.expired_at: list[float] = []

    def fold(self, records: Sequence[Rec], batch: Batch[Rec]) -> None:
        for r in records:
            batch.fold(self.engine, r.event, r.offset, r.partition, r.ingested_at)
            if r.poison:
                raise ValueError(f"cannot encode the state of {r.event.event_id}")
            batch.records.append(r)
            self.event_time.took(self.now, r.ingested_at)
        batch.take_changes(self.engine)

    def commit(self, batch: Batch[Rec]) -> None:
        if self.fail:
            raise self.fail.pop(0)
        if any(s.event_id == self.refused for s in batch.signals):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        if self.most is not None and len(batch.records) > self.most:
            raise ValueError(f"an entry of {len(batch.records)} records is too large")
        self.commits.append(batch)
        for name, key, state in (row for packed in batch.changes for row in unpack_rows(packed)):
            if state is None:
                self.rows.pop((name, key), None)
            else:
                self.rows[(name, key)] = state
        self.marks.update(batch.marks)
        if batch.records:
            self.offset = batch.records[-1].offset

    def reset(self, records: Sequence[Rec] | None) -> None:
        self.engine = Engine(PACK)
        self.engine.restore(((n, k, s) for (n, k), s in self.rows.items()), self.marks)

    def uncommitted(self, records: Sequence[Rec]) -> Sequence[Rec]:
        return [r for r in records if r.offset > self.offset]

    def poisoned(self, record: Rec, error: Exception) -> QuarantinedEvent:
        return QuarantinedEvent.of(b"{}", record.offset, record.partition, record.ingested_at, error, "d1")

    def transient(self, error: Exception) -> bool:
        return isinstance(error, OSError)

    def expired(self, watermark: float) -> None:
        self.expired_at.append(watermark)

    def alerted(self) -> list[str]:
        return [s.dedup_key.split("\x1f")[-1] for b in self.commits for s in b.signals]  # source, then event id

    def logins(self) -> dict[str, float]:
        return {k: s.value for k, s in self.engine.states["logins"].items()}


def login(offset: int, at: float, customer: str = "c1", partition: int = 0, poison: bool = False) -> Rec:
    event = ev("login.succeeded", at=at, customer_id=customer, source="app", event_id=f"e{offset}")
    return Rec(offset, partition, event, ingested_at=at, poison=poison)


def test_one_commit_carries_alerts_state_event_times_late_events_and_the_offset() -> None:
    m = Memory()
    Driver(m).run([login(1, T0), login(2, T0 + 60), login(3, T0 + 10, "c2", partition=1), login(4, T0 + 30)])
    (batch,) = m.commits
    assert [r.offset for r in batch.records] == [1, 2, 3, 4]
    assert m.offset == 4
    assert [s.event_id for s in batch.signals] == ["e2", "e4"]
    changed = {(name.partition("#")[0], key) for packed in batch.changes for name, key, _ in unpack_rows(packed)}
    assert changed == {("logins", "c1"), ("logins", "c2"), ("pattern:silent", "app")}
    assert batch.marks == {0: T0 + 60, 1: T0 + 10}
    # e4 is behind its partition's watermark (T0 + 60 - 5 s); e3 is on time in its own partition
    (late,) = batch.late
    assert (late.event_id, late.offset, late.watermark) == ("e4", 4, T0 + 55)
    assert batch.processed == 4
    checkpoint = batch.checkpoint("p", 4)
    assert (checkpoint.name, checkpoint.offset, checkpoint.state_changes) == ("p", 4, batch.changes)
    assert (checkpoint.watermarks, checkpoint.late_events) == (batch.marks, batch.late)


def test_a_poison_record_is_quarantined_and_the_records_around_it_committed_without_it() -> None:
    m, clean = Memory(), Memory()
    Driver(m).run([login(1, T0), login(2, T0 + 1, "c2", poison=True), login(3, T0 + 2), login(4, T0 + 3, "c2")])
    Driver(clean).run([login(1, T0), login(3, T0 + 2), login(4, T0 + 3, "c2")])
    assert m.offset == 4
    (entry,) = [e for b in m.commits for e in b.quarantined]
    assert (entry.offset, entry.reason) == (2, "ValueError: cannot encode the state of e2")
    # the records before it commit with it (the offset moves past it), the rest after
    assert [[r.offset for r in b.records] for b in m.commits] == [[1, 2], [3, 4]]
    assert m.alerted() == clean.alerted() == ["e3"]
    # nothing of the poison stays in the state, in memory or committed
    assert m.logins() == clean.logins() == {"c1": 2.0, "c2": 1.0}
    assert m.rows == clean.rows


def test_commit_each_commits_every_record_of_a_failed_batch_on_its_own() -> None:
    m = Memory()
    Driver(m, commit_each=True).run([login(1, T0), login(2, T0 + 1, poison=True), login(3, T0 + 2)])
    assert [([r.offset for r in b.records], len(b.quarantined)) for b in m.commits] == [([1], 0), ([2], 1), ([3], 0)]


@pytest.mark.parametrize(
    ("poisons", "commits"),
    [
        ({3}, [([1, 2], 0), ([3], 1), ([4, 5, 6], 0)]),
        ({1, 4}, [([1], 1), ([2, 3], 0), ([4], 1), ([5, 6], 0)]),
        ({6}, [([1, 2, 3, 4, 5], 0), ([6], 1)]),
        ({2, 3}, [([1], 0), ([2], 1), ([3], 1), ([4, 5, 6], 0)]),
    ],
    ids=["one", "two", "last", "adjacent"],
)
def test_in_order_a_poison_costs_a_commit_before_it_one_of_its_own_and_one_after(
    poisons: set[int], commits: list[tuple[list[int], int]]
) -> None:
    m, clean = Memory(), Memory()
    records = [login(i, T0 + i, "c1" if i % 2 else "c2", poison=i in poisons) for i in range(1, 7)]
    Driver(m, commit_each=True, in_order=True).run(records)
    Driver(clean).run([r for r in records if not r.poison])
    assert [([r.offset for r in b.records], len(b.quarantined)) for b in m.commits] == commits
    assert m.offset == 6
    assert m.alerted() == clean.alerted()
    assert m.logins() == clean.logins()  # nothing of a poison in memory
    assert m.rows == clean.rows  # nor committed


class AtTheEnd(Memory):
    """A runtime whose state codec runs once a batch (the failure is no record's) until a
    reset, after which it runs record by record, as the kafka worker's does."""

    def __init__(self) -> None:
        super().__init__()
        self.isolating = False

    def fold(self, records: Sequence[Rec], batch: Batch[Rec]) -> None:
        for r in records:
            batch.fold(self.engine, r.event, r.offset, r.partition, r.ingested_at)
            if r.poison and self.isolating:
                raise ValueError(f"cannot encode the state of {r.event.event_id}")
            batch.records.append(r)
        if not self.isolating and any(r.poison for r in records):
            raise ValueError("cannot encode a state of the batch")
        batch.take_changes(self.engine)

    def reset(self, records: Sequence[Rec] | None) -> None:
        super().reset(records)
        self.isolating = True


def test_in_order_a_failure_no_record_was_blamed_for_is_placed_by_running_the_batch_again() -> None:
    m = AtTheEnd()
    Driver(m, commit_each=True, in_order=True).run([login(i, T0 + i, poison=i == 4) for i in range(1, 8)])
    assert [([r.offset for r in b.records], len(b.quarantined)) for b in m.commits] == [
        ([1, 2, 3], 0),
        ([4], 1),
        ([5, 6, 7], 0),
    ]


def test_in_order_a_commit_the_store_refuses_falls_back_to_one_commit_per_record() -> None:
    m = Memory()
    m.refused = "e2"  # its alert: the fold passes, the commit fails
    Driver(m, commit_each=True, in_order=True).run([login(1, T0), login(2, T0 + 1), login(3, T0 + 2, "c2")])
    assert [([r.offset for r in b.records], len(b.quarantined)) for b in m.commits] == [([1], 0), ([2], 1), ([3], 0)]


def test_in_order_a_poison_after_records_too_many_to_commit_together_ends_one_commit_per_record() -> None:
    m, clean = Memory(), Memory()
    m.most = 3  # the records before the poison cannot commit together: no guess again, and an end
    records = [login(i, T0 + i, poison=i == 6) for i in range(1, 9)]
    Driver(m, commit_each=True, in_order=True).run(records)
    Driver(clean).run([r for r in records if not r.poison])
    assert [([r.offset for r in b.records], len(b.quarantined)) for b in m.commits] == [
        *[([i], 0) for i in range(1, 6)],
        ([6], 1),
        ([7], 0),
        ([8], 0),
    ]
    assert m.rows == clean.rows


def test_an_alert_the_store_refuses_quarantines_its_event_with_one_commit_per_record() -> None:
    m = Memory()
    m.refused = "e2"
    Driver(m).run([login(1, T0), login(2, T0 + 1), login(3, T0 + 2, "c2")])
    assert [([r.offset for r in b.records], len(b.quarantined)) for b in m.commits] == [([1], 0), ([2], 1), ([3], 0)]
    assert m.commits[1].quarantined[0].reason.startswith("OverflowError: ")
    assert m.offset == 3


def test_a_transient_failure_is_raised_and_nothing_is_quarantined() -> None:
    m = Memory()
    m.fail = [Lost("database is locked")]
    with pytest.raises(Lost):
        Driver(m).run([login(1, T0), login(2, T0 + 1)])
    assert m.commits == []
    m.reset(None)  # what the runtime does before it tries again
    Driver(m).run([login(1, T0), login(2, T0 + 1)])
    assert m.offset == 2
    assert m.logins() == {"c1": 2.0}


def test_a_quiet_partition_fires_its_timers_on_the_wall_clock_from_the_last_arrival() -> None:
    m = Memory()
    driver = Driver(m)
    driver.cycle([login(1, T0)], [m], T0)
    m.now = T0 + 304  # 5 min after the event, and within the lateness of it
    driver.cycle([], [m], m.now)
    assert m.alerted() == []
    m.now = T0 + 306
    driver.cycle([], [m], m.now)
    assert m.alerted() == ["app"]
    driver.cycle([], [m], m.now + 60)
    assert m.alerted() == ["app"]  # once


def test_timers_wait_while_records_come_and_an_old_replay_is_not_closed_by_todays_clock() -> None:
    today = T0 + 30 * 86400
    m = Memory(now=today)  # the events are a month old; they arrive now
    driver = Driver(m)
    driver.cycle([Rec(i, 0, login(i, T0 + i).event, ingested_at=today) for i in range(1, 4)], [m], today)
    m.now = today + 290  # 290 s of event time since the last event: not silent yet
    driver.cycle([], [m], m.now)
    assert "app" not in m.alerted()
    m.now = today + 310
    driver.cycle([], [m], m.now)
    assert "app" in m.alerted()
    busy = EventClock(taken_at=today + 290, arrived_at=today - 600)
    assert busy.idle_watermark({0: T0}, today + 292, 5.0) is None  # a record just came: event time alone


def test_expiry_runs_on_its_cadence_and_never_past_the_wall_clock() -> None:
    m = Memory()
    driver = Driver(m)
    driver.cycle([login(1, T0 + 600)], [m], T0)  # an event ten minutes ahead of the wall clock
    assert m.expired_at == [T0 - 5]  # the wall clock's watermark, not the event's
    driver.cycle([], [m], T0 + 20)
    assert m.expired_at == [T0 - 5]  # not due again yet
    driver.cycle([], [m], T0 + 31)
    assert m.expired_at == [T0 - 5, T0 + 26]
    assert expiry_watermark({0: T0 + 100, 1: T0 + 50}, T0 + 200, 5.0) == T0 + 45  # the slowest partition
    assert expiry_watermark({}, T0, 5.0) is None
