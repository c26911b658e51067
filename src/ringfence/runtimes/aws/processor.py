"""The Kinesis processor: the engine over one shard's batch, state loaded from and committed
to DynamoDB (see :mod:`ringfence.runtimes.aws.state` for why that is exact under retries and
races), then the committed signals applied to the alerts table and announced on SNS.

A batch is cut into chunks whose writes fit one DynamoDB transaction; each chunk commits on
its own, so a failure part-way leaves the committed chunks committed and Lambda retries from
the first record not committed (``ReportBatchItemFailures``). A record that cannot be
decoded, or that makes the engine raise, is a poison record: it goes to the poison queue
with the reason and the records behind it carry on. An event the engine raised on is marked
processed; a record that is no event has no identity to mark, so a retried batch parks it again.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal
from ringfence.errors import StoreError
from ringfence.events.model import Event, decode_event
from ringfence.runtimes.aws.alerts import AlertTable
from ringfence.runtimes.aws.state import (
    MAX_TRANSACTION_ITEMS,
    STATE_TTL_MARGIN_S,
    Commit,
    DeadlinePush,
    LoadedRow,
    Outbox,
    RowWrite,
    StateConflict,
    StateKey,
    StateTable,
    event_key,
)

log = logging.getLogger("ringfence.aws.processor")

TIMER_ROWS = 8  # rows of each commit kept for absence timers that come due in its chunk
CONFLICT_ATTEMPTS = 10
TICK_SOURCE = "tick"  # the source name of timers fired by the wall clock


@dataclass(frozen=True)
class StreamRecord:
    """One Kinesis record as the event source mapping hands it over."""

    sequence: str
    partition_key: str
    data: bytes
    arrived_at: float


@dataclass
class BatchOutcome:
    """What one invocation did; ``failed_sequence`` is reported back to Lambda."""

    processed: int = 0
    skipped: int = 0  # processed by an earlier (retried or racing) invocation
    poison: int = 0
    conflicts: int = 0
    late: int = 0  # behind the watermark: processed, and marked late on their markers
    commits: int = 0
    alerts_created: int = 0
    failed_sequence: str | None = None


class PoisonSink(Protocol):
    def send(self, shard: str, record: StreamRecord, reason: str) -> None: ...


@dataclass
class _Item:
    record: StreamRecord
    event: Event
    writes: set[StateKey] = field(default_factory=set)
    reads: set[StateKey] = field(default_factory=set)


class _Poison(Exception):
    def __init__(self, item: _Item, reason: str) -> None:
        super().__init__(reason)
        self.item = item
        self.reason = reason


class _Invocation:
    """What one invocation carries from chunk to chunk: event-time marks, and the outboxes it
    committed but applies only at its end (so the silence deadlines they push are still
    pending: a later chunk must see them, or it could fire a silence its own earlier events
    ended)."""

    def __init__(self, marks: dict[int, float]) -> None:
        self.marks = marks
        self.outboxes: list[Outbox] = []
        self.pushes: dict[StateKey, DeadlinePush] = {}

    def committed(self, commit: Commit, partition: int) -> None:
        if commit.max_event_time is not None:
            self.marks[partition] = max(self.marks.get(partition, commit.max_event_time), commit.max_event_time)
        if commit.has_outbox:
            self.outboxes.append(Outbox(commit.outbox_key, commit.outbox, commit.pushes))
        for push in commit.pushes:
            held = self.pushes.get((push.name, push.key))
            if held is None or push.deadline > held.deadline:
                self.pushes[(push.name, push.key)] = push

    def with_pending_pushes(self, loaded: dict[StateKey, LoadedRow], reads: set[StateKey]) -> dict[StateKey, LoadedRow]:
        """``loaded`` with this invocation's own not-yet-applied silence deadlines over it."""
        for row_key, push in self.pushes.items():
            row = loaded.get(row_key)
            stored = max(row.high or -math.inf, row.deadline or -math.inf) if row is not None else -math.inf
            if row_key in reads and push.deadline > stored:  # else it was overtaken, or fired since
                loaded[row_key] = LoadedRow(
                    push.state, row.version if row is not None else 0, push.deadline, push.deadline
                )
        return loaded


def ordinal(sequence: str, index: int) -> str:
    """A signal's place among its source's signals, comparable as a string."""
    return f"{int(sequence):0128d}.{index:04d}"


def partition_of_shard(shard: str) -> int:
    """The engine's partition number for a shard id such as ``shardId-000000000003``."""
    digits = re.findall(r"\d+", shard)
    return int(digits[-1]) if digits else 0


class ShardProcessor:
    """Runs the engine for the aws runtime; one per container, any shard."""

    def __init__(
        self,
        pack: RulePack,
        state: StateTable,
        alerts: AlertTable,
        announce: Callable[[dict[str, Any]], None],
        poison: PoisonSink,
        *,
        allowed_lateness_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pack = pack
        self.state = state
        self.alerts = alerts
        self.announce = announce
        self.poison = poison
        self.lateness = allowed_lateness_s
        self.clock = clock
        self._planner = Engine(pack, allowed_lateness_s)
        self._rng = random.Random()  # nosec B311 # noqa: S311 - backoff jitter, not security
        # called between a chunk's prepare and its commit; tests use it to stage races
        self.before_commit: Callable[[Commit], None] = lambda commit: None

    # -- a batch -----------------------------------------------------------------------------------

    def process(self, shard: str, records: list[StreamRecord]) -> BatchOutcome:
        outcome = BatchOutcome()
        self.drain_outbox(shard, outcome)
        items: list[_Item] = []
        seen: set[str] = set()
        for record in records:
            try:
                event = decode_event(record.data)
            except (msgspec.DecodeError, ValueError) as exc:
                self.poison.send(shard, record, f"not a valid event: {exc}")
                outcome.poison += 1
                continue
            if event_key(event) in seen:  # the same event twice in one batch (a producer's retry)
                outcome.skipped += 1
                continue
            seen.add(event_key(event))
            items.append(_Item(record, event))
        done = self.state.processed([event_key(i.event) for i in items])
        outcome.skipped += len(done)
        pending = [i for i in items if event_key(i.event) not in done]
        for item in pending:
            item.reads, item.writes = self._planner.state_rows_of(item.event)
        chunks = plan_chunks(pending)
        # read once per invocation: every shard's event time, and the timers that may come due
        checkpoints = self.state.checkpoints()
        marks = {
            partition_of_shard(s): c.max_event_time
            for s, c in checkpoints.items()
            if c.max_event_time is not None and s != TICK_SOURCE
        }
        committed = marks.get(partition_of_shard(shard))
        newest = max([*marks.values(), *(i.event.occurred_at for i in pending)], default=None)
        due = self.state.due_timers(newest - self.lateness, TIMER_ROWS * len(chunks)) if newest is not None else []
        run = _Invocation(marks)
        for chunk in chunks:
            latest = max([*marks.values(), *(i.event.occurred_at for i in chunk)])
            timers = [row for deadline, row in due if deadline < latest - self.lateness][:TIMER_ROWS]
            due = [(d, row) for d, row in due if row not in timers]
            try:
                self._run_chunk(shard, chunk, timers, run, outcome)
            except Exception:
                first = chunk[0].record.sequence
                log.exception("shard %s: chunk from %s failed; Lambda retries from there", shard, first)
                outcome.failed_sequence = first
                break
        mark = marks.get(partition_of_shard(shard))
        if mark is not None and (committed is None or mark > committed):
            self.state.advance_checkpoint(shard, mark, self.clock())  # first: the tick finds the shard by it
        # once per invocation: a busy source's silence row is written once, not once a chunk
        self._apply(shard, run.outboxes, outcome)
        return outcome

    def _run_chunk(
        self, shard: str, chunk: list[_Item], timers: list[StateKey], run: _Invocation, outcome: BatchOutcome
    ) -> None:
        """Commit one chunk, redoing it on the winner's state after a lost race."""
        poisoned: list[_Item] = []
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                commit = self._prepare(shard, chunk, poisoned, timers, run)
            except _Poison as p:
                self.poison.send(shard, p.item.record, p.reason)
                outcome.poison += 1
                poisoned.append(p.item)
                chunk = [i for i in chunk if i is not p.item]
                continue
            self.before_commit(commit)
            try:
                self.state.commit(commit, self.clock())
            except StateConflict as conflict:
                outcome.conflicts += 1
                log.info("shard %s: commit conflict (%s); reloading", shard, conflict.codes)
                done = self.state.processed([event_key(i.event) for i in chunk])
                outcome.skipped += len(done)
                chunk = [i for i in chunk if event_key(i.event) not in done]
                poisoned = [i for i in poisoned if event_key(i.event) not in done]
                if not chunk and not poisoned:
                    return
                time.sleep(self._rng.uniform(0.01, 0.05))
                continue
            outcome.commits += 1
            outcome.processed += len(chunk)
            outcome.late += len(commit.late)
            run.committed(commit, partition_of_shard(shard))
            return
        raise StoreError(f"shard {shard}: {CONFLICT_ATTEMPTS} commits in a row lost a race")

    def _prepare(
        self, shard: str, chunk: list[_Item], poisoned: list[_Item], timers: list[StateKey], run: _Invocation
    ) -> Commit:
        """Load the chunk's state, run the engine over it; the commit that would record it."""
        reads: set[StateKey] = set(timers)
        for item in chunk:
            reads |= item.reads
        loaded = run.with_pending_pushes(self.state.load(reads), reads)
        marks = run.marks
        engine = Engine(self.pack, self.lateness)
        engine.restore(((n, k, row.state) for (n, k), row in loaded.items()), marks)
        partition = partition_of_shard(shard)
        outbox: list[tuple[str, AlertSignal]] = []
        late: set[str] = set()
        for item in chunk:
            event = item.event
            if engine.is_late(event, partition):
                late.add(event_key(event))
            # Kinesis sequence numbers outgrow 64 bits: an event's offset here is its arrival in µs
            offset = int(item.record.arrived_at * 1e6)
            try:
                hits = engine.process(event, offset, partition, item.record.arrived_at)
            except Exception as exc:  # the engine failed on this event: it must not block the shard
                raise _Poison(item, f"the engine failed on this event: {type(exc).__name__}: {exc}") from exc
            outbox += [(ordinal(item.record.sequence, j), s) for j, s in enumerate(hits) if s.mode == "live"]
        now = self.clock()
        rows: list[RowWrite] = []
        pushes: list[DeadlinePush] = []
        watermark = engine.watermark()
        for name, key, encoded in engine.take_changes():
            row = loaded.get((name, key))
            if engine.is_silence(name):
                deadline = engine.timer_of(name, key)
                old = row.deadline if row is not None else None
                fired = old is not None and old < watermark  # came due in this chunk: the engine fired it
                if deadline == old and not fired:
                    continue  # only the time last seen moved: nothing worth a write
                if deadline is not None and encoded is not None and not fired:
                    pushes.append(DeadlinePush(name, key, encoded, deadline))  # newest wins, no version
                    continue
            if encoded is None and (row is None or not row.version):
                continue
            horizon = engine.horizon_of(name)
            rows.append(
                RowWrite(
                    name,
                    key,
                    encoded,
                    row.version if row is not None and row.version else None,
                    deadline=engine.timer_of(name, key),
                    expires_at=now + horizon + STATE_TTL_MARGIN_S if horizon is not None else None,
                    high=row.high if row is not None else None,
                )
            )
        done = [event_key(i.event) for i in (*chunk, *poisoned)]
        key = ordinal(chunk[0].record.sequence if chunk else poisoned[0].record.sequence, 0)
        return Commit(shard, key, rows, done, outbox, pushes, late, engine.max_event_time.get(partition))

    # -- alerts ----------------------------------------------------------------------------------------

    def _apply(self, source: str, outboxes: list[Outbox], outcome: BatchOutcome) -> None:
        """Apply what commits left: the newest deadline of each silence, then the signals to the
        alerts table (each once), announcing the new alerts; then drop the outbox items. Safe
        to repeat after a crash anywhere in it."""
        newest: dict[StateKey, DeadlinePush] = {}
        for push in (p for o in outboxes for p in o.pushes):
            if (push.name, push.key) not in newest or push.deadline > newest[(push.name, push.key)].deadline:
                newest[(push.name, push.key)] = push
        for push in newest.values():
            self.state.apply_push(push)
        for outbox in outboxes:
            self._apply_signals(source, outbox, outcome)
            self.state.drop_outbox(source, outbox.key)

    def _apply_signals(self, source: str, outbox: Outbox, outcome: BatchOutcome) -> None:
        now = self.clock()
        for position, signal in outbox.signals:
            applied = self.alerts.apply(signal, source, position, now)
            if applied is None:
                continue
            if applied.created:
                outcome.alerts_created += 1
            if applied.owes_announcement:
                self.announce(
                    {
                        "version": "1",
                        "change": "firing",
                        "alert_id": applied.alert_id,
                        "rule_id": signal.rule_id,
                        "severity": signal.severity,
                        "audience": signal.audience,
                    }
                )
                self.alerts.mark_announced(applied.alert_id)

    def drain_outbox(self, source: str, outcome: BatchOutcome) -> None:
        """Apply what an earlier invocation committed but did not get to apply."""
        self._apply(source, self.state.outbox(source), outcome)

    # -- quiet keys ------------------------------------------------------------------------------------

    def _auto_resolve(self) -> None:
        """Resolve alerts of detections with ``auto_resolve`` that had no new hit for that long."""
        now = self.clock()
        for rule_id, quiet in self.pack.auto_resolve.items():
            for aid in self.alerts.quiet_active(rule_id, now - quiet):
                if self.alerts.auto_resolve(aid, f"no new hit for {quiet:.0f} s", now):
                    item = self.alerts.get_item(aid)
                    self.announce(resolved_message(aid, rule_id, item["severity"]["S"], item["audience"]["S"]))

    def tick(self) -> BatchOutcome:
        """Fire the absence timers that wall-clock time has made due (scheduled every minute).

        As in the embedded runtime, event time runs on from the newest event by the wall-clock
        time since it was committed, so a replay of old events is not closed early. It also
        finishes any shard's outbox left behind (a batch Lambda gave up on, with no traffic
        since to retry it), so no committed alert waits for the next event.
        """
        outcome = BatchOutcome()
        for source in [TICK_SOURCE, *self.state.checkpoints()]:
            self.drain_outbox(source, outcome)
        self._auto_resolve()
        for _ in range(CONFLICT_ATTEMPTS):
            checkpoints = self.state.checkpoints()
            shards = [c for s, c in checkpoints.items() if s != TICK_SOURCE and c.max_event_time is not None]
            if not shards:
                return outcome
            newest = max(shards, key=lambda c: c.max_event_time or 0.0)
            assert newest.max_event_time is not None
            now = self.clock()
            mark = newest.max_event_time + (now - newest.at) - self.lateness
            due = [row for _, row in self.state.due_timers(mark, MAX_TRANSACTION_ITEMS - 1)]
            if not due:
                return outcome
            loaded = self.state.load(due)
            engine = Engine(self.pack, self.lateness)
            marks = {partition_of_shard(c.shard): c.max_event_time for c in shards if c.max_event_time is not None}
            engine.restore(((n, k, row.state) for (n, k), row in loaded.items()), marks)
            stamp = str(int(now * 1e6))
            signals = [(ordinal(stamp, j), s) for j, s in enumerate(engine.advance(mark)) if s.mode == "live"]
            rows = [
                RowWrite(n, k, st, loaded[(n, k)].version, engine.timer_of(n, k), high=loaded[(n, k)].high)
                for n, k, st in engine.take_changes()
                if (n, k) in loaded  # firing only changes the rows it loaded
            ]
            try:
                self.state.commit(Commit(TICK_SOURCE, ordinal(stamp, 0), rows, [], signals), now)
            except StateConflict:
                outcome.conflicts += 1
                continue
            outcome.commits += 1
            if signals:
                self._apply(TICK_SOURCE, [Outbox(ordinal(stamp, 0), signals, [])], outcome)
            return outcome
        raise StoreError(f"the timer tick lost {CONFLICT_ATTEMPTS} races in a row")


def resolved_message(alert_id: str, rule_id: str, severity: str, audience: str) -> dict[str, Any]:
    """The announcement of a resolved alert (the dispatcher tells the receivers told of it)."""
    return {
        "version": "1",
        "change": "resolved",
        "alert_id": alert_id,
        "rule_id": rule_id,
        "severity": severity,
        "audience": audience,
    }


def plan_chunks(items: list[_Item]) -> list[list[_Item]]:
    """Cut a batch into runs whose commits fit one DynamoDB transaction: the outbox, a marker
    per event, every row the events may write, and room for the timers that come due."""
    budget = MAX_TRANSACTION_ITEMS - 1 - TIMER_ROWS
    chunks: list[list[_Item]] = []
    current: list[_Item] = []
    writes: set[StateKey] = set()
    for item in items:
        merged = writes | item.writes
        if current and len(merged) + len(current) + 1 > budget:
            chunks.append(current)
            current, merged = [], set(item.writes)
        current.append(item)
        writes = merged
    if current:
        chunks.append(current)
    return chunks
