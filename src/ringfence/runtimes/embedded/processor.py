"""The processor: reads the journal in order and runs it through the processing driver
(:mod:`ringfence.runtimes.processing`), committing each batch's alerts together with the
engine state, late and poison events and the offset they reflect in one SQLite transaction.

Used by the embedded runtime (a thread); one instance owns every partition of its log and
holds their engine state in memory, checkpointed through the store's state changelog and the
snapshots written behind it (:mod:`ringfence.store.state_log`). On its thread, a batch's commit
runs behind the engine (:mod:`.commit_behind`): the next batch is read and folded meanwhile.
A failed commit leaves the memory ahead of the store: the engine is then reloaded from the
checkpoint. A failed event (poison) only undoes what its batch changed in memory, where the
engine can (the compiled core, which keeps copies of the states each batch changes for it): at
a bank's state a reload takes seconds, and a flood of poison, each reloading it, held everyone's
events behind them. Quarantined events an admin re-drives are run again at a batch boundary; snapshot
parts go with the batches (and on their own while the processor is caught up, when retention
deletes old records too).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from ringfence.clock import Clock
from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.events.model import decode_event
from ringfence.log.base import EventLog, Record
from ringfence.metrics import Metrics
from ringfence.runtimes.embedded.commit_behind import BehindCommitFailed, CommitBehind
from ringfence.runtimes.embedded.pace import Pace
from ringfence.runtimes.embedded.progress_anchor import ProgressAnchor
from ringfence.runtimes.processing import Batch, Driver, EventClock
from ringfence.store.quarantine import QuarantinedEvent, QuarantineEntry, QuarantineRepository, is_store_failure
from ringfence.store.retention import delete_oldest
from ringfence.store.sqlite import SqliteStore
from ringfence.store.state_log import SnapshotPart

log = logging.getLogger("ringfence.processor")

BATCH_SIZE = 5_000  # events a batch at most: when behind, fewer commits an event (about 7 % more throughput than 2,000)
RETENTION_EVERY_S = 60.0
RETENTION_ROWS = 1_000  # rows deleted per idle step (~50 ms: pages written and fsync'd); journal segments go whole
WRITER_CACHE_MIB = 64
STORE_RETRY_S = 1.0
REDRIVE_CHECK_S = 5.0  # re-drives asked for elsewhere (the CLI) are looked for this often


class Processor:
    """Journal -> engine -> store, with checkpoints. It recovers the checkpoint before its
    first batch (:meth:`run` does, on its own thread, so the API serves meanwhile) and after
    a failed step: :attr:`recovered` is set while its engine holds the committed state,
    :attr:`started` once the first recovery is done, and :attr:`failure` says why it stopped
    if the checkpoint itself cannot be read.

    It is the driver's runner (:class:`~ringfence.runtimes.processing.Runner`) and the one
    partition its housekeeping runs over."""

    def __init__(
        self,
        log_: EventLog,
        store: SqliteStore,
        engine: Engine,
        metrics: Metrics,
        clock: Clock,
        *,
        name: str = "embedded",
        retention_s: float | None = None,
        progress: ProgressAnchor | None = None,
    ) -> None:
        self.log = log_
        self.progress = progress  # where the offset committed is recorded outside the store, if anywhere
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self.name = name
        self.retention_s = retention_s
        self.offset = 0  # committed: what the store's checkpoint reflects
        self._read_to = 0  # folded: the next batch is read past it (ahead of offset by a commit behind)
        self.wakeup = threading.Event()
        self.pace = Pace()  # events a second of busy time, for backpressure
        self.event_time = EventClock(clock.time(), clock.time())
        # its fold runs a batch alike after a reset: a failure it did not place stays unplaced
        self.driver: Driver[Record] = Driver(self, places_after_reset=False)
        self._last_retention = 0.0
        self._retaining = False  # a round of retention has more to delete
        self._retention_deleted = 0  # by the round so far
        self._round_began = self._behind_warned = 0.0
        self._housekeeping_after = 0.0  # monotonic: none before (the store failed the last one)
        self._changes: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.on_alerts: Callable[[], None] = lambda: None  # told after a batch committed live signals
        self.quarantine = QuarantineRepository(store)
        self._redrive_due = True  # re-drives requested before a restart are run at the first batch
        self._redrive_checked = 0.0
        self.recovered = threading.Event()
        self.started = threading.Event()  # stays set through later recoveries
        self.failure: Exception | None = None
        self.failing: tuple[float, str] | None = None  # since when (its clock) its steps fail, and why
        self._stop: threading.Event | None = None
        self._tainted = False  # a failed fold left its effects in memory; cleared by recover() or an undo
        self._undoable = False  # no commit failed since the engine took up the store's state
        self._behind: CommitBehind | None = None  # the writer thread, while run() runs
        self._behind_ok = False  # the driver's ordinary cycle: its commit may run behind
        self._synchronous_through = -1  # a batch beginning here or before commits on this thread

    def request_reload(self, pack: RulePack) -> None:
        """Swap in ``pack`` at the next batch boundary, keeping unchanged state (hot reload)."""
        self._changes.put(lambda: self._reload(pack))
        self.wakeup.set()

    def request_list(self, name: str, values: frozenset[str]) -> None:
        """Replace a list's values at the next batch boundary."""

        def apply() -> None:
            self.engine.set_list(name, values)

        self._changes.put(apply)
        self.wakeup.set()

    def request_redrive(self) -> None:
        """Run the quarantined events an admin asked to re-drive, at the next batch boundary."""
        self._redrive_due = True
        self.wakeup.set()

    def _reload(self, pack: RulePack) -> None:
        dropped = len(self.engine.dropped_state_names(pack))
        self.engine = self.engine.reloaded(pack)
        # the checkpoint must not bring back the dropped states: a snapshot of the new engine
        # now retires the changelog and snapshots that hold them
        self.store.snapshot_all(self.engine)
        self._take_up_engine()
        log.info(
            "rule pack %s loaded (%s); dropped the state of %d changed definitions", pack.version, pack.digest, dropped
        )

    def _apply_changes(self) -> None:
        if self._changes.empty():
            return
        self._settle()  # first (a failure here keeps the changes queued): a reload writes a snapshot
        while True:
            try:
                change = self._changes.get_nowait()
            except queue.Empty:
                return
            change()

    def _take_up_engine(self) -> None:
        """The engine holds what the store holds: from here on it keeps copies of what each
        batch changes, to undo a failed one with (about a twentieth of its time an event, a
        seventh with many events a key: docs/performance.md, item 37). With an engine that can
        undo, the driver commits the records before a poison one together and runs it alone
        (``in_order``: each step back is an undo); with one that cannot, each step back is a
        reload, so after one the batch runs record by record, a reload only after each poison."""
        self.engine.undo_point()
        self._undoable = True
        self.driver.in_order = self.engine.undoes

    def load_offset(self) -> None:
        """The offset of the last checkpoint, without its state: what lag is measured from
        while the state is still being restored."""
        self.offset = self._read_to = self.store.load_checkpoint(self.name)[0]

    def recover(self) -> None:
        """Load the last checkpoint into a fresh engine: its state and the offset it reflects.
        Until it has all been read, :attr:`recovered` stays clear and no batch runs, so a
        failure part-way (the store down) is retried from a fresh engine again, never run on."""
        started = time.monotonic()
        self._settle_quietly()  # a commit still behind lands (or not) before the checkpoint is read
        self.recovered.clear()
        self._redrive_due = True
        self._tainted = False
        self.engine = self.engine.fresh()  # the old state goes first: never two in memory
        self.offset, marks = self.store.load_checkpoint(self.name)
        self._read_to = self.offset
        applied = self.store.restore_state(self.engine)
        self.engine.max_event_time = marks
        self._take_up_engine()
        # event time runs on from the newest record's arrival, not from this start: a downtime
        # must not postpone the absence timers it made due
        newest = self.log.read(self.offset - 1, 1) if self.offset else []
        arrived = newest[0].ingested_at if newest and newest[0].offset == self.offset else self.clock.time()
        self.event_time = EventClock(self.clock.time(), arrived)
        # the gauge holds what was restored at once, not only after the next batch's commit (which a
        # reader who saw the processed offset reach the head could come before)
        self.metrics.engine_state_keys.set(self.engine.state_size())
        self.recovered.set()
        self.started.set()
        log.info(
            "recovered checkpoint at offset %d with %d feature states (%d rows read) in %.2fs",
            self.offset,
            self.engine.state_size(),
            applied,
            time.monotonic() - started,
        )

    def run_once(self) -> int:
        """Process one batch from the log, committed on return; return how many events it held."""
        return self._step(behind=False)

    def _step(self, *, behind: bool) -> int:
        """One batch; with ``behind``, its commit may still be running on the writer thread on
        return (the next step, or a settle, waits for it)."""
        if not self.recovered.is_set():
            self.recover()
            if self._stop is not None and self._stop.is_set():
                return 0  # stopped while restoring: no batch once stop() has returned
        self._apply_changes()
        self._redrive()
        records = self.log.read(self._read_to, BATCH_SIZE)
        self._behind_ok = behind
        try:
            self.driver.cycle(records, [self], self.clock.time())
        finally:
            self._behind_ok = False
        if not records:
            self._settle()
            self._housekeeping()
        return len(records)

    # -- the driver's runner -----------------------------------------------------------------

    def fold(self, records: Sequence[Record], batch: Batch[Record]) -> None:
        try:
            bodies, offsets = [r.body for r in records], [r.offset for r in records]
            partitions, ingested_ats = [r.partition for r in records], [r.ingested_at for r in records]
            try:
                batch.fold_stored(self.engine, bodies, offsets, partitions, ingested_ats)
            except BaseException:
                # the records before the one that failed ran: the driver commits them together
                # and runs that one alone (its ``in_order``)
                batch.records += records[: self.engine.ran]
                raise
            batch.records += records
            batch.mark(self.engine, {r.partition for r in records})
            if records:
                self.event_time.took(self.clock.time(), records[-1].ingested_at)
            batch.take_changes(self.engine)
        except BaseException:
            # what the failed event did is in memory until the reset: no snapshot part may read it
            self._tainted = True
            raise

    def commit(self, batch: Batch[Record]) -> None:
        """Commit ``batch``: behind the engine in the ordinary cycle of :meth:`run` (the
        snapshot part is taken here, from the state exactly as the batch left it), else here."""
        if not batch.records and batch.empty:
            return
        self._settle()
        offset = batch.records[-1].offset if batch.records else self._read_to
        snapshot = self._snapshot_part(batch.changed_rows, sum(map(len, batch.changes)))
        first = batch.records[0].offset if batch.records else offset
        head = self.log.head()  # read here: the writer thread touches no journal
        behind = self._behind if self._behind_ok and first > self._synchronous_through else None
        # from here the batch is the store's (or its commit failed, and the engine is reloaded):
        # an undo comes back to the batch's take, not before it
        self.engine.changes_committed()
        try:
            if behind is None or not behind.submit(lambda: self._write(batch, offset, snapshot, head)):
                self._write(batch, offset, snapshot, head)
        except BaseException:
            self._failed_commit()
            raise
        self._read_to = offset
        self.metrics.engine_state_keys.set(self.engine.state_size())

    def _write(self, batch: Batch[Record], offset: int, snapshot: SnapshotPart | None, head: int) -> None:
        """The store's commit of ``batch`` (on the writer thread when behind): it touches no
        engine and no journal, which the processor's thread is using. ``head``: the journal's
        when the batch was handed over, for the lag."""
        signals = batch.signals
        created = self.store.commit_batch(signals, batch.checkpoint(self.name, offset, snapshot), self.clock.time())
        self.offset = offset
        self.failing = None
        committed = self.clock.time()  # the batch's alerts are queryable from now
        if signals:
            self.on_alerts()
        m = self.metrics
        m.events_processed.inc(batch.processed)
        m.events_late.inc(len(batch.late))
        m.events_quarantined.inc(len(batch.quarantined))
        m.processor_lag.set(max(0, head - offset))
        # a timer's signal is for an event of an earlier batch: its wait is the timer's, not the path's
        first = batch.records[0].offset if batch.records else offset + 1
        for s in signals:
            m.rule_hits.labels(s.rule_id, s.mode).inc()
            if s.mode == "live" and first <= s.offset <= offset:
                m.ingest_to_alert.observe(max(0.0, committed - s.ingested_at))
        for _, signal in created:
            m.alerts.labels(signal.severity, signal.audience).inc()
        if self.progress is not None:  # last: its fsyncs every few seconds delay no alert
            self.progress.record(offset)  # committed: the anchor never gets ahead of the store

    def _failed_commit(self) -> None:
        # the walk moved past the part that was not written, and the batch's effects are in
        # memory uncommitted: no part until the reset (the driver may commit once before it)
        self._tainted = True
        self._undoable = False  # the store is behind the last take: only a reload is right
        self.store.states.abandon()

    def _settle(self) -> None:
        """Wait for the commit behind, if any. If it failed, the engine is ahead of the store by
        that batch and the ones folded since: raised as a failure to retry (:meth:`transient`),
        so the processor restores its checkpoint and runs them again; if the failure was not
        the store's, the batch at the failed one's place then commits on this thread, where the
        driver isolates its cause."""
        if self._behind is None:
            return
        try:
            self._behind.settle()
        except BehindCommitFailed as error:
            self._failed_commit()
            if _isolated_next(error):
                self._synchronous_through = self._read_to
            raise

    def _settle_quietly(self) -> None:
        """:meth:`_settle` for a caller that restores the checkpoint anyway."""
        try:
            self._settle()
        except BehindCommitFailed as error:
            log.warning("%s: restoring the checkpoint", error)

    def _snapshot_part(self, changed_rows: int, changed_bytes: int) -> SnapshotPart | None:
        """The snapshot part that goes with a batch; none while a failed event's effects are in
        memory (the good records before a poison one are committed before the reset). A state
        the core cannot encode now was encoded when it last changed, so a failure here is a
        bug, not an event's: the snapshot is given up (and begun again later) rather than the
        batch failed."""
        if self._tainted:
            return None
        try:
            return self.store.states.next_part(self.engine, changed_rows, changed_bytes)
        except Exception as error:
            log.error("writing the state snapshot failed (%s): begun again later", type(error).__name__)
            self.store.states.abandon()
            return None

    def reset(self, records: Sequence[Record] | None = None) -> None:
        """After a failed fold or commit the in-memory state is ahead of the store: bring it
        back. After a failed fold (a poison event) the engine undoes what the batch changed,
        where it can; after a failed commit, or where it cannot, the checkpoint is reloaded.
        A failed commit behind is raised instead (a failure to retry): the records the driver
        would run again do not begin where the store ends, so the whole step is run again. The
        rest of the cycle (the driver's record-by-record run) commits on this thread: the
        driver reads each commit's failure."""
        self._behind_ok = False
        self._settle()
        if self._undoable and self.engine.undo():
            self._tainted = False  # the memory is the store's again: snapshot parts may go on
            self.metrics.engine_state_keys.set(self.engine.state_size())
            log.info("undid a failed batch's changes in memory, back to offset %d", self.offset)
            return
        self.recover()

    def uncommitted(self, records: Sequence[Record]) -> Sequence[Record]:
        return [r for r in records if r.offset > self.offset]

    def poisoned(self, record: Record, error: Exception) -> QuarantinedEvent:
        return QuarantinedEvent.of(
            record.body, record.offset, record.partition, record.ingested_at, error, self.engine.pack.version
        )

    def transient(self, error: Exception) -> bool:
        return is_store_failure(error) or isinstance(error, BehindCommitFailed)

    def expired(self, watermark: float) -> None:
        """The journal keeps nothing per key beside the engine state."""

    # -- re-drives, housekeeping ---------------------------------------------------------------

    def _redrive(self) -> None:
        """Run the quarantined events an admin asked to re-drive (one commit each)."""
        now = self.clock.time()
        if not self._redrive_due and now - self._redrive_checked < REDRIVE_CHECK_S:
            return
        self._redrive_checked = now
        requested = self.quarantine.requested()
        if requested:
            self._settle()  # a commit behind that failed is not the re-driven event's failure
        for entry in requested:
            self._redrive_one(entry)
        self._redrive_due = False

    def _redrive_one(self, entry: QuarantineEntry) -> None:
        """Run a quarantined event at the current offset: it moves no offset, and is not late
        (an old event run now is late by nature; it was not late when it came)."""
        e = entry.event
        record = Record(e.offset, e.partition, e.ingested_at, e.body)
        one: Batch[Record] = Batch(redriven=[entry.id])
        try:
            one.fold(self.engine, decode_event(record.body), record.offset, record.partition, record.ingested_at)
            one.late.clear()
            one.take_changes(self.engine)
            self.commit(one)
            log.info("re-drove quarantined event %s/%s (entry %d)", e.source, e.event_id, entry.id)
        except Exception as error:
            if self.transient(error):
                raise
            self.reset()
            self.commit(Batch(quarantined=[self.poisoned(record, error)]))
            log.error("re-driven event %s/%s failed again (%s)", e.source, e.event_id, type(error).__name__)

    def _housekeeping(self) -> None:
        """Caught up: write a part of the state snapshot if one is due, delete some retired
        rows, and apply retention. Each step is small, so an event arriving meanwhile waits a
        few milliseconds at most, and steps are paced by the idle wait, so that the journal's
        commits keep most of the disk. None changes the engine, so a store failure here needs
        no restore: the snapshot walk is given up (begun again later) and all are retried once
        the store is back."""
        if time.monotonic() < self._housekeeping_after:
            return
        try:
            self.store.snapshot_step(self.engine)
            self._retention()
        except Exception as error:
            if not is_store_failure(error):
                raise
            self.store.states.abandon()
            self._housekeeping_after = time.monotonic() + STORE_RETRY_S
            log.warning("housekeeping failed (%s): retried in %.0f s", type(error).__name__, STORE_RETRY_S)

    def _retention(self) -> None:
        """A slice of the due retention: one every idle step until a round is done, a round
        every :data:`RETENTION_EVERY_S` (a round at once deleted a minute of journal at the
        reference load, holding the journal's write lock from ingest meanwhile). A processor
        with few idle steps falls behind rather than stalling ingest; the log says so."""
        now = self.clock.time()
        if self.retention_s is None:
            return
        if not self._retaining:
            if now - self._last_retention < RETENTION_EVERY_S:
                return
            self._round_began = self._behind_warned = now
        elif now - self._behind_warned >= RETENTION_EVERY_S:  # once a minute while it lasts
            self._behind_warned = now
            log.warning(
                "retention is behind: a round begun %.0f s ago has deleted %d processed events from the log "
                "so far; the processor has few idle moments",
                now - self._round_began,
                self._retention_deleted,
            )
        before = now - self.retention_s
        deleted = self.log.delete_older_than(before, self.offset, RETENTION_ROWS)
        late = delete_oldest(self.store.conn(), "late_events", before, self.offset, RETENTION_ROWS)
        self._retention_deleted += deleted
        self._retaining = deleted >= RETENTION_ROWS or late >= RETENTION_ROWS  # a dropped segment: look again
        if not self._retaining:
            self._last_retention = now  # once done: a round the store failed is retried
            if self._retention_deleted:
                log.info("retention deleted %d processed events from the log", self._retention_deleted)
            self._retention_deleted = 0

    def run(self, stop: threading.Event, idle_wait_s: float = 0.05) -> None:
        """Process until ``stop`` is set, sleeping on :attr:`wakeup` when caught up; each
        batch's commit runs behind the engine, the last one settled before this returns."""
        self._stop = stop
        self._tune_connection()
        self._behind = CommitBehind(f"{self.name}-commit", self._tune_connection, self.store.close)
        try:
            self._run(stop, idle_wait_s)
        finally:
            self._stop_writer()

    def _stop_writer(self) -> None:
        """Settle the last commit behind, then stop the writer thread. If that commit failed, a
        later run restores the checkpoint before a batch."""
        try:
            self._settle()
            if self.progress is not None:
                self.progress.record(self.offset, now=True)
        except BehindCommitFailed as error:
            self.recovered.clear()
            log.warning("%s at stop: its events are processed again at the next start", error)
        finally:
            behind, self._behind = self._behind, None
            if behind is not None:
                behind.close()

    def _tune_connection(self) -> None:
        # this thread's store connection updates the alerts' indexes and deletes retired
        # changelog entries and snapshot parts: a page cache larger than the default
        self.store.conn().execute(f"PRAGMA cache_size=-{WRITER_CACHE_MIB * 1024}")

    def _run(self, stop: threading.Event, idle_wait_s: float) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                processed = self._step(behind=True)
            except Exception as error:
                if not self.recovered.is_set() and not is_store_failure(error):
                    # the checkpoint cannot be read (a corrupt row): retrying cannot help
                    self.failure = error
                    log.critical(
                        "cannot restore the checkpoint (%s): processing stopped, events refused; "
                        "repair the store and restart",
                        type(error).__name__,
                    )
                    return
                # the driver isolated what one event can cause: this is the store's, or no event's;
                # the memory may be ahead of the store, so the checkpoint comes back before a batch
                # the exception's name only (its message may quote an event); a commit behind's says its cause's
                reason = str(error) if isinstance(error, BehindCommitFailed) else type(error).__name__
                log.warning("processor step failed (%s); retrying from offset %d", reason, self.offset)
                if self.failing is None:
                    self.failing = (self.clock.time(), reason)
                self.recovered.clear()
                if not _isolated_next(error):
                    stop.wait(STORE_RETRY_S)
                continue
            if processed:
                self.pace.add(processed, time.monotonic() - started)
            else:
                if self._behind is None or not self._behind.pending:
                    self.failing = None  # its store read and nothing to write: well again
                self.wakeup.wait(idle_wait_s)
                self.wakeup.clear()


def _isolated_next(error: Exception) -> bool:
    """A commit behind failed, not for the store: its batch now runs on the processor's thread,
    where the driver finds its cause at once. No pause: nothing is waited for."""
    return isinstance(error, BehindCommitFailed) and not is_store_failure(error.__cause__ or error)
