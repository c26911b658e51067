"""The Kinesis processor: the processing driver (:mod:`ringfence.runtimes.processing`) over
one shard's batch, with state loaded from and committed to DynamoDB (see
:mod:`ringfence.runtimes.aws.state` for why that is exact under retries and races), then the
committed signals applied to the alerts table and announced on SNS.

A batch is cut into chunks whose writes fit one DynamoDB transaction; each chunk commits on
its own, so a failure part-way leaves the committed chunks committed and Lambda retries from
the first record not committed (``ReportBatchItemFailures``). A chunk that lost a race is
run again on the winner's state. A record that is no event goes to the poison queue with the
reason; a batch retried from a record before it parks it again. A chunk the engine or the
state codec fails on, or whose states outgrow an item, is run event by event, each in a
transaction of its own, and an event that fails is a poison record too: sent to the poison
queue, then passed by the shard's progress in a transaction of its own, while the events
behind it carry on. An event a producer sent again (the same ``source`` and ``event_id``) is
found among its partition key's recent event ids and skipped (:mod:`.dedup`).
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from ringfence.alerts.model import AlertChange
from ringfence.engine.engine import Engine
from ringfence.engine.native import make_engine
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal
from ringfence.errors import StoreError
from ringfence.events.model import Event, decode_event
from ringfence.runtimes.aws import dedup
from ringfence.runtimes.aws.alerts import AlertContention, AlertRefused, AlertTable
from ringfence.runtimes.aws.announcements import announcement
from ringfence.runtimes.aws.resources import QUICK_CALL_MAX_S, contention_pause_s, error_code
from ringfence.runtimes.aws.state import (
    ANY_STATE,
    MAX_TRANSACTION_ITEMS,
    Commit,
    DeadlinePush,
    ItemTooLarge,
    ItemWrite,
    KeyItem,
    Loaded,
    LoadedRow,
    Outbox,
    Progress,
    RowWrite,
    StateConflict,
    StateKey,
    StateTable,
    event_key,
    sequence_key,
    writes_of,
)
from ringfence.runtimes.processing import Batch, Driver, EventClock
from ringfence.store.quarantine import QuarantinedEvent, reason_of

log = logging.getLogger("ringfence.aws.processor")

TIMER_ROWS = 8  # rows of each commit kept for absence timers that come due in its chunk
CONFLICT_ATTEMPTS = 10
TICK_SOURCE = "tick"  # the source name of timers fired by the wall clock
TICK_APPLY_S = 30.0  # of the tick's 60 s, the most it spends on hits left behind (a hot alert's take seconds)


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
    skipped: int = 0  # processed by an earlier (retried or racing) invocation, or a producer's retry
    poison: int = 0
    conflicts: int = 0
    late: int = 0  # behind the watermark: processed all the same
    commits: int = 0
    alerts_created: int = 0
    alerts_waiting: int = 0  # alerts whose hits it left waiting (every race lost, no time left): applied later
    failed_sequence: str | None = None


class PoisonSink(Protocol):
    def send(self, shard: str, record: StreamRecord, reason: str) -> None: ...


@dataclass
class _Item:
    record: StreamRecord
    event: Event
    # the batch's last record up to the next event to run: those after it that are no event, or
    # the same event again, are passed with it (a batch's last record too, whatever it is)
    through: str = ""
    writes: set[StateKey] = field(default_factory=set)
    reads: set[StateKey] = field(default_factory=set)


class _EngineFailed(Exception):
    """The engine or the state codec raised on a chunk's events (the cause says what): with a
    key's states grown past an item (ItemTooLarge), the failures that are an event's fault.
    Anything else here is DynamoDB's, for Lambda to retry."""


class _Invocation:
    """What one invocation carries from chunk to chunk: event-time marks, and the heartbeat
    deadlines its commits pushed, which it applies only at its end (still pending: a later
    chunk must see them, or it could fire a heartbeat its own earlier events ended)."""

    def __init__(self, marks: dict[int, float], progress: str | None) -> None:
        self.marks = marks
        self.progress = progress  # the shard's last record committed, as this invocation knows it
        self.pushes: dict[StateKey, DeadlinePush] = {}

    def committed(self, commit: Commit, partition: int) -> None:
        if commit.progress is not None:
            self.progress = commit.progress.last
        if commit.max_event_time is not None:
            self.marks[partition] = max(self.marks.get(partition, commit.max_event_time), commit.max_event_time)
        for push in commit.pushes:
            held = self.pushes.get((push.name, push.key))
            if held is None or push.deadline > held.deadline:
                self.pushes[(push.name, push.key)] = push

    def with_pending_pushes(self, loaded: dict[StateKey, LoadedRow], reads: set[StateKey]) -> dict[StateKey, LoadedRow]:
        """``loaded`` with this invocation's own not-yet-applied heartbeat deadlines over it."""
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


class _Chunk:
    """The driver's runner for one chunk of a shard's batch. Each fold loads the state its
    events may touch (and the due timers) afresh, so it starts from the last commit; each
    commit is one ``TransactWriteItems``, conditional on the versions loaded."""

    def __init__(
        self, processor: ShardProcessor, shard: str, timers: list[StateKey], run: _Invocation, outcome: BatchOutcome
    ) -> None:
        self.p = processor
        self.shard = shard
        self.partition = partition_of_shard(shard)
        self.timers = timers
        self.run = run
        self.outcome = outcome
        self._prepared: (
            tuple[list[ItemWrite], list[RowWrite], list[DeadlinePush], list[tuple[str, AlertSignal]]] | None
        ) = None
        self._span: tuple[str, str] | None = None  # the first and last record of the fold
        self._duplicates = 0  # producers' retries the fold found (not processed): skipped once committed

    def fold(self, items: Sequence[_Item], batch: Batch[_Item]) -> None:
        self._prepared = None
        self._span = (items[0].record.sequence, items[-1].through) if items else None
        self._duplicates = 0
        reads: set[StateKey] = set(self.timers)
        for item in items:
            reads |= item.reads | {(ANY_STATE, item.record.partition_key)}  # its recent event ids
        loaded = self.p.state.load(reads)
        rows = self.run.with_pending_pushes(loaded.rows, reads)
        engine = make_engine(self.p.pack, self.p.lateness, engine=self.p.engine_kind)
        engine.restore(((n, k, row.state) for (n, k), row in rows.items()), self.run.marks)
        outbox: list[tuple[str, AlertSignal]] = []
        kept: dict[str, dict[bytes, int]] = {}
        new_ids: dict[str, list[tuple[bytes, int]]] = {}
        try:
            for item in items:
                key, known = item.record.partition_key, dedup.digest(event_key(item.event))
                if key not in kept:
                    kept[key] = dedup.ids_of(loaded.keys.get(key, KeyItem(0)).ids)
                if known in kept[key]:  # a producer's retry of an event processed
                    self._duplicates += 1
                    continue
                new_ids.setdefault(key, []).append((known, int(item.record.arrived_at)))
                # Kinesis sequence numbers outgrow 64 bits: an event's offset here is its arrival in µs
                at = item.record.arrived_at
                hits = batch.fold(engine, item.event, int(at * 1e6), self.partition, at)
                batch.records.append(item)
                outbox += [(ordinal(item.record.sequence, j), s) for j, s in enumerate(hits) if s.mode == "live"]
            due = {key for name, key in self.timers if name == ANY_STATE}  # written again, fired or not
            ids = {key: dedup.with_ids(loaded.keys.get(key, KeyItem(0)).ids, new) for key, new in new_ids.items()}
            keys, rows_written, pushes = writes_of(engine, Loaded(rows, loaded.keys), self.p.clock(), due, ids)
        except Exception as exc:
            raise _EngineFailed(type(exc).__name__) from exc
        self._prepared = (keys, rows_written, pushes, outbox)

    def commit(self, batch: Batch[_Item]) -> None:
        prepared, self._prepared = self._prepared, None
        keys, rows, pushes, outbox = prepared if prepared is not None else ([], [], [], [])
        if self._span is None:
            return
        first, last = self._span
        if self.run.progress is not None and sequence_key(last) <= self.run.progress:
            raise StateConflict(["the shard's progress is past this chunk"])  # never moved back
        by_sequence = {int(i.record.sequence): i.record for i in batch.records}
        for entry in batch.quarantined:  # first: the shard's progress must not pass it unless it was parked
            self.p.poison.send(
                self.shard, by_sequence[entry.offset], f"the engine failed on this event: {entry.reason}"
            )
        commit = Commit(
            self.shard,
            ordinal(first, 0),
            rows,
            progress=Progress(self.shard, self.run.progress, sequence_key(last)),
            outbox=outbox,
            pushes=pushes,
            max_event_time=batch.marks.get(self.partition),
            keys=keys,
        )
        self.p.before_commit(commit)
        self.p.state.commit(commit, self.p.clock())
        self.outcome.commits += 1
        self.outcome.skipped += self._duplicates
        self.outcome.processed += batch.processed
        self.outcome.poison += len(batch.quarantined)
        self.outcome.late += len(batch.late)
        self.run.committed(commit, self.partition)

    def reset(self, records: Sequence[_Item] | None) -> None:
        """Nothing is held between a fold and its commit: each fold loads what it needs."""

    def uncommitted(self, items: Sequence[_Item]) -> list[_Item]:
        """``items`` past the shard's progress, read again: a racing invocation may have
        committed some (counted skipped; those this invocation committed are not)."""
        ours = self.run.progress
        self.run.progress = self.p.state.progress(self.shard)
        left = self.past_progress(items, count=False)
        theirs = [i for i in items if i not in left and (ours is None or sequence_key(i.record.sequence) > ours)]
        self.outcome.skipped += len(theirs)
        return left

    def past_progress(self, items: Sequence[_Item], *, count: bool = True) -> list[_Item]:
        """``items`` past the shard's progress as this invocation knows it (the others skipped)."""
        known = self.run.progress
        left = [i for i in items if known is None or sequence_key(i.record.sequence) > known]
        if count:
            self.outcome.skipped += len(items) - len(left)
        return left

    def poisoned(self, item: _Item, error: Exception) -> QuarantinedEvent:
        r = item.record
        return QuarantinedEvent.of(
            r.data,
            int(r.sequence),
            self.partition,
            r.arrived_at,
            error.__cause__ if isinstance(error, _EngineFailed) and error.__cause__ is not None else error,
            self.p.pack.version,
            origin=self.shard,
            record_key=r.partition_key.encode(),
        )

    def transient(self, error: Exception) -> bool:
        # DynamoDB refusing a key or item over its sizes (from a record no ingest of this release
        # wrote) refuses it on every retry: the record is run alone and parked, as an engine
        # failure is, not retried with the good records until Lambda drops all. Any other
        # refusal may be the deployment's (a table's schema), not a record's: retried as it is
        return not isinstance(error, _EngineFailed | ItemTooLarge) and not _oversized(error)


def _oversized(error: Exception) -> bool:
    """DynamoDB's ValidationException for a key or an item over its size limits."""
    return error_code(error) == "ValidationException" and "size" in str(error).lower()


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
        engine_kind: str = "auto",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pack = pack
        self.state = state
        self.alerts = alerts
        self.announce = announce
        self.poison = poison
        self.lateness = allowed_lateness_s
        self.engine_kind = engine_kind  # the ``engine`` setting: which engine runs the chunks and timers
        self.clock = clock
        self._planner = Engine(pack, allowed_lateness_s)
        self._rng = random.Random()  # nosec B311 # noqa: S311 - backoff jitter, not security
        # called between a chunk's prepare and its commit; tests use it to stage races
        self.before_commit: Callable[[Commit], None] = lambda commit: None

    # -- a batch -----------------------------------------------------------------------------------

    def process(self, shard: str, records: list[StreamRecord], deadline: float | None = None) -> BatchOutcome:
        """Process a shard's batch; ``deadline`` (:func:`time.monotonic`; None: none): when Lambda
        stops the invocation. Its alerts' hits are applied and announced only while a call to
        SNS can still end before it; the others wait in their outboxes (AlertsWaiting) for the
        next invocation of the shard or the tick, rather than the invocation being timed out
        after its commits, and its batch retried."""
        outcome = BatchOutcome()
        # what earlier invocations committed and did not get to apply (a crash, hits that lost
        # every race): their heartbeat deadlines first (a chunk must not fire a heartbeat they
        # moved); their alerts' hits at the end, with this invocation's own
        earlier = self.state.outbox(shard)
        self._apply_pushes(earlier)
        items: list[_Item] = []
        seen: set[str] = set()
        for record in records:
            try:
                event = decode_event(record.data)
            except (msgspec.DecodeError, ValueError) as exc:
                self.poison.send(shard, record, f"not a valid event: {reason_of(exc)}")
                outcome.poison += 1
                if items:
                    items[-1].through = record.sequence
                continue
            if event_key(event) in seen:  # the same event twice in one batch (a producer's retry)
                outcome.skipped += 1
                items[-1].through = record.sequence
                continue
            seen.add(event_key(event))
            items.append(_Item(record, event, through=record.sequence))
        progress = self.state.progress(shard)  # the records up to it are committed: a retried batch
        pending = [i for i in items if progress is None or sequence_key(i.record.sequence) > progress]
        if progress is None and pending:  # a new shard, or the first batch after the upgrade to progress items
            marked = self.state.marked_before_progress([event_key(i.event) for i in pending])
            pending = [i for i in pending if event_key(i.event) not in marked]
        outcome.skipped += len(items) - len(pending)
        for item in pending:
            item.reads, item.writes = self._planner.state_rows_of(item.event)
        chunks = plan_chunks(pending, self.state.heartbeats)
        # read once per invocation: every shard's event time, and the timers that may come due
        checkpoints = self.state.checkpoints()
        if shard not in checkpoints and pending:
            # before its first commit: every shard's outboxes are found by its checkpoint
            self.state.register_shard(shard, self.clock())
        marks = {
            partition_of_shard(s): c.max_event_time
            for s, c in checkpoints.items()
            if c.max_event_time is not None and s != TICK_SOURCE
        }
        committed = marks.get(partition_of_shard(shard))
        newest = max([*marks.values(), *(i.event.occurred_at for i in pending)], default=None)
        due = self.state.due_timers(newest - self.lateness, TIMER_ROWS * len(chunks)) if newest is not None else []
        if any(name in self.state.heartbeats for _, (name, _key) in due):
            # a heartbeat may fire: another shard's commit may have moved its deadline on and
            # not written it yet (a pushed deadline is written at the end of an invocation, one
            # that died first leaves it in its outbox). Write those first, or it fires early
            self._apply_pushes([o for source in checkpoints if source != shard for o in self.state.outbox(source)])
        run = _Invocation(marks, progress)
        for chunk in chunks:
            latest = max([*marks.values(), *(i.event.occurred_at for i in chunk)])
            timers = [row for deadline, row in due if deadline < latest - self.lateness][:TIMER_ROWS]
            due = [(d, row) for d, row in due if row not in timers]
            runner = _Chunk(self, shard, timers, run, outcome)
            try:
                self._run_chunk(runner, chunk)
            except Exception:
                first = chunk[0].record.sequence
                log.exception("shard %s: chunk from %s failed; Lambda retries from there", shard, first)
                outcome.failed_sequence = first
                break
        mark = marks.get(partition_of_shard(shard))
        if mark is not None and (committed is None or mark > committed):
            self.state.advance_checkpoint(shard, mark, self.clock())  # first: the tick finds the shard by it
        # every outbox of the shard not yet applied, read again now, not only the ones read at
        # the start and its own: a zombie invocation of the shard may have committed chunks
        # since, and their hits come before this one's (an alert's pointer for the shard, once
        # past this invocation's hits, would take theirs for applied)
        left = self.state.outbox(shard)
        self._apply_pushes(left)  # once per invocation: a busy source's heartbeat row once, not once a chunk
        apply_until = deadline - QUICK_CALL_MAX_S if deadline is not None else None
        self._apply_signals(shard, left, outcome, apply_until)
        return outcome

    def _run_chunk(self, runner: _Chunk, chunk: list[_Item]) -> None:
        """Commit one chunk, redoing what is left of it on the winner's state after a lost race."""
        driver = Driver(runner, commit_each=True)
        # past the shard's progress as this invocation last read it: a zombie that lost a race
        # to the retry must not run the retry's later chunks again (their commits would move
        # the progress back)
        chunk = runner.past_progress(chunk)
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                chunk = runner.uncommitted(chunk)
            if not chunk:
                return
            try:
                driver.run(chunk)
                return
            except StateConflict as conflict:
                runner.outcome.conflicts += 1
                log.info("shard %s: commit conflict (%s); reloading", runner.shard, conflict.codes)
                if attempt + 1 < CONFLICT_ATTEMPTS:
                    time.sleep(contention_pause_s(attempt + 1, self._rng))
        raise StoreError(f"shard {runner.shard}: {CONFLICT_ATTEMPTS} commits in a row lost a race")

    # -- alerts ----------------------------------------------------------------------------------------

    def _apply_pushes(self, outboxes: list[Outbox]) -> None:
        """Write the newest deadline each heartbeat was pushed to by ``outboxes``' commits (only
        if newer than any the row has had: safe to repeat)."""
        newest: dict[StateKey, DeadlinePush] = {}
        for push in (p for o in outboxes for p in o.pushes):
            if (push.name, push.key) not in newest or push.deadline > newest[(push.name, push.key)].deadline:
                newest[(push.name, push.key)] = push
        for push in newest.values():
            self.state.apply_push(push)

    def _apply_signals(
        self, source: str, outboxes: list[Outbox], outcome: BatchOutcome, deadline: float | None = None
    ) -> None:
        """Apply the alert signals ``source``'s commits left in ``outboxes``, each once: all the
        hits of one alert in one write (a hot alert hit by every chunk takes one an
        invocation), announcing the alert if that is owed; then drop the outboxes. Safe to
        repeat after a crash anywhere in it.

        Hits that lose every race for their alert (:class:`AlertContention`), or that DynamoDB
        refuses as they are (:class:`AlertRefused`: kept, not lost, and counted waiting), stay in their
        outboxes, and the next invocation of ``source`` or the tick applies them with its own:
        an alert's hits of one source are applied in order, as its dedup pointer's place for
        the source requires. The events go on being processed meanwhile. So do the hits of the
        alerts not tried before ``deadline`` (:func:`time.monotonic`), if one is given, and of
        those SNS did not take the announcement of (owed still: sent when they are applied again)."""
        now = self.clock()
        by_alert: dict[tuple[str, str], list[tuple[str, AlertSignal]]] = {}
        held_by: dict[tuple[str, str], set[str]] = {}
        for outbox in outboxes:
            for position, signal in outbox.signals:
                alert = (signal.rule_id, signal.dedup_key)
                by_alert.setdefault(alert, []).append((position, signal))
                held_by.setdefault(alert, set()).add(outbox.key)
        kept: set[str] = set()
        sns_failed: Exception | None = None
        for alert, hits in by_alert.items():
            if deadline is not None and time.monotonic() > deadline:
                outcome.alerts_waiting += 1
                kept |= held_by[alert]
                continue
            hits.sort(key=lambda hit: hit[0])
            try:
                applied = self.alerts.apply(hits, source, now)
            except AlertContention as exc:
                log.warning("%s: %s; they wait for the next invocation or the tick", source, exc)
                outcome.alerts_waiting += 1
                kept |= held_by[alert]
                continue
            except AlertRefused as exc:  # this alert's fault, not DynamoDB's: the others go on
                log.error("%s: %s; its hits wait in their outbox (AlertsWaiting)", source, exc)
                outcome.alerts_waiting += 1
                kept |= held_by[alert]
                continue
            signals = dict(hits)
            for each in (*applied.earlier, applied) if applied is not None else ():
                if each.created:
                    outcome.alerts_created += 1
                if not each.owes_announcement:
                    continue
                last = signals.get(each.last, hits[-1][1])  # of the same rule
                if deadline is not None and time.monotonic() > deadline:  # no time for SNS: owed still
                    outcome.alerts_waiting += 1
                    kept |= held_by[alert]
                    continue
                try:
                    if sns_failed:  # once SNS failed, not asked again: each try may take its timeouts
                        raise sns_failed
                    self.announce(
                        announcement(AlertChange.FIRING, each.alert_id, last.rule_id, last.severity, last.audience)
                    )
                    self.alerts.mark_announced(each.alert_id, each.last)
                except Exception as error:  # SNS down: the events go on; the announcement stays owed
                    if not sns_failed:
                        log.exception("%s: alert %s not announced; its hits wait in its outbox", source, each.alert_id)
                    sns_failed = sns_failed or error
                    outcome.alerts_waiting += 1
                    kept |= held_by[alert]
        for outbox in outboxes:
            if outbox.key not in kept:
                self.state.drop_outbox(source, outbox.key)

    # -- quiet keys ------------------------------------------------------------------------------------

    def tick(self, outcome: BatchOutcome | None = None) -> BatchOutcome:
        """Fire the absence timers that wall-clock time has made due (scheduled every minute),
        by the runtimes' one idle rule (:class:`~ringfence.runtimes.processing.EventClock`):
        event time runs on from the newest event by the wall-clock time since that shard
        last committed. It also finishes every shard's outboxes left behind (a batch Lambda gave
        up on with no traffic since to retry it, hits that lost every race for a hot alert),
        so no committed alert waits for the next event: their heartbeat deadlines before the
        timers fire, their alerts' hits after (also when the timers could not be fired), those
        of the alerts tried within ``TICK_APPLY_S`` (the schedule's pipeline step comes after
        it in the same invocation). ``outcome``, if given, is filled in even when it raises.
        """
        outcome = outcome if outcome is not None else BatchOutcome()
        deadline = time.monotonic() + TICK_APPLY_S
        shards = [source for source in self.state.checkpoints() if source != TICK_SOURCE]
        self._rng.shuffle(shards)  # when time runs out, not the same shards' hits each minute
        left = {source: self.state.outbox(source) for source in [TICK_SOURCE, *shards]}
        self._apply_pushes([o for outboxes in left.values() for o in outboxes])
        try:
            left[TICK_SOURCE] += self._fire_due_timers(outcome)
        finally:  # the hits left behind are applied even if the timers could not be fired
            for source, outboxes in left.items():
                if outboxes:
                    self._apply_signals(source, outboxes, outcome, deadline)
        return outcome

    def _fire_due_timers(self, outcome: BatchOutcome) -> list[Outbox]:
        """Commit the timers due by the idle watermark, once; the outbox of what they signal."""
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                time.sleep(contention_pause_s(attempt, self._rng))
            checkpoints = self.state.checkpoints()
            shards = [c for s, c in checkpoints.items() if s != TICK_SOURCE and c.max_event_time is not None]
            marks = {partition_of_shard(c.shard): c.max_event_time for c in shards if c.max_event_time is not None}
            if not marks:
                return []
            newest = max(shards, key=lambda c: c.max_event_time or 0.0)
            now = self.clock()
            mark = EventClock(newest.at, newest.at).idle_watermark(marks, now, self.lateness)
            # the due rows, the outbox and the tick's progress in one transaction
            due = [row for _, row in self.state.due_timers(mark, MAX_TRANSACTION_ITEMS - 2)] if mark is not None else []
            if mark is None or not due:
                return []
            loaded = self.state.load(due)
            engine = make_engine(self.pack, self.lateness, engine=self.engine_kind)
            engine.restore(((n, k, row.state) for (n, k), row in loaded.rows.items()), marks)
            # its hits' ordinals follow its commits, not the clock of the host it runs on (one behind
            # the last tick's would have them taken for applied)
            last = self.state.progress(TICK_SOURCE)
            stamp = str(max(int(now * 1e6), int(last) + 1 if last is not None else 0))
            signals = [(ordinal(stamp, j), s) for j, s in enumerate(engine.advance(mark)) if s.mode == "live"]
            # firing only changes the states it loaded; each due item is written again
            keys, rows, _ = writes_of(engine, loaded, now, {k for n, k in due if n == ANY_STATE})
            try:
                progress = Progress(TICK_SOURCE, last, sequence_key(stamp))
                self.state.commit(
                    Commit(TICK_SOURCE, ordinal(stamp, 0), rows, progress=progress, outbox=signals, keys=keys), now
                )
            except StateConflict:
                outcome.conflicts += 1
                continue
            outcome.commits += 1
            return [Outbox(ordinal(stamp, 0), signals, [])] if signals else []
        raise StoreError(f"the timer tick lost {CONFLICT_ATTEMPTS} races in a row")


def plan_chunks(items: list[_Item], heartbeats: frozenset[str]) -> list[list[_Item]]:
    """Cut a batch into runs whose commits fit one DynamoDB transaction: the outbox, the
    shard's progress, every key's item and heartbeat row the events may write (their partition
    keys' items among them, for their recent event ids), and room for the timers that come due."""
    budget = MAX_TRANSACTION_ITEMS - 2 - TIMER_ROWS  # the outbox and the shard's progress
    chunks: list[list[_Item]] = []
    current: list[_Item] = []
    writes: set[StateKey | str] = set()
    for item in items:
        # a heartbeat's row, or a key's item; and its partition key's, for its recent event ids
        own: set[StateKey | str] = {row if row[0] in heartbeats else row[1] for row in item.writes}
        own.add(item.record.partition_key)
        merged = writes | own
        if current and len(merged) > budget:
            chunks.append(current)
            current, merged = [], own
        current.append(item)
        writes = merged
    if current:
        chunks.append(current)
    return chunks
