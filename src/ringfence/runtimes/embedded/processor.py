"""The processor: reads the journal in order and runs it through the processing driver
(:mod:`ringfence.runtimes.processing`), committing each batch's alerts together with the
engine state, late and poison events and the offset they reflect in one SQLite transaction.

Used by the embedded runtime (a thread); one instance owns every partition of its log and
holds their engine state in memory, checkpointed through the store's state changelog
(:mod:`ringfence.store.state_log`). A failed commit leaves the memory ahead of the store: the
engine is then reloaded from the checkpoint. Quarantined events an admin re-drives are run
again at a batch boundary; the store writes the state behind, and retention deletes old
records, while the processor is caught up.
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
from ringfence.runtimes.processing import Batch, Driver, EventClock
from ringfence.store.quarantine import QuarantinedEvent, QuarantineEntry, QuarantineRepository, is_store_failure
from ringfence.store.sqlite import SqliteStore

log = logging.getLogger("ringfence.processor")

BATCH_SIZE = 2_000
RETENTION_EVERY_S = 60.0
WRITER_CACHE_MIB = 64
STORE_RETRY_S = 1.0
REDRIVE_CHECK_S = 5.0  # re-drives asked for elsewhere (the CLI) are looked for this often


class Processor:
    """Journal -> engine -> store, with checkpoints. Call :meth:`recover` before running.

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
    ) -> None:
        self.log = log_
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self.name = name
        self.retention_s = retention_s
        self.offset = 0
        self.wakeup = threading.Event()
        self.event_time = EventClock(clock.time(), clock.time())
        self.driver: Driver[Record] = Driver(self)
        self._last_retention = 0.0
        self._changes: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.on_alerts: Callable[[], None] = lambda: None  # told after a batch committed live signals
        self.quarantine = QuarantineRepository(store)
        self._redrive_due = True  # re-drives requested before a restart are run at the first batch
        self._redrive_checked = 0.0

    def request_reload(self, pack: RulePack) -> None:
        """Swap in ``pack`` at the next batch boundary, keeping unchanged state (hot reload)."""
        self._changes.put(lambda: self._reload(pack))
        self.wakeup.set()

    def request_list(self, name: str, values: frozenset[str]) -> None:
        """Replace a list's values at the next batch boundary."""

        def apply() -> None:
            self.engine.lists[name] = values

        self._changes.put(apply)
        self.wakeup.set()

    def request_redrive(self) -> None:
        """Run the quarantined events an admin asked to re-drive, at the next batch boundary."""
        self._redrive_due = True
        self.wakeup.set()

    def _reload(self, pack: RulePack) -> None:
        engine = self.engine.reloaded(pack)
        dropped = self.store.keep_only_states(set(engine.persisted_names.values()))
        self.engine = engine
        log.info(
            "rule pack %s loaded (%s); dropped the state of %d changed definitions", pack.version, pack.digest, dropped
        )

    def _apply_changes(self) -> None:
        while True:
            try:
                change = self._changes.get_nowait()
            except queue.Empty:
                return
            change()

    def recover(self) -> None:
        """Load the last checkpoint: engine state and the offset it reflects."""
        started = time.monotonic()
        self._redrive_due = True
        self.offset, marks = self.store.load_checkpoint(self.name)
        self.engine.restore(self.store.iter_feature_state(), marks)
        log.info(
            "recovered checkpoint at offset %d with %d feature states in %.2fs",
            self.offset,
            self.engine.state_size(),
            time.monotonic() - started,
        )

    def run_once(self) -> int:
        """Process one batch from the log; return how many events it held."""
        self._apply_changes()
        self._redrive()
        records = self.log.read(self.offset, BATCH_SIZE)
        self.driver.cycle(records, [self], self.clock.time())
        if not records:
            self._housekeeping()
        return len(records)

    # -- the driver's runner -----------------------------------------------------------------

    def fold(self, records: Sequence[Record], batch: Batch[Record]) -> None:
        for record in records:
            batch.fold(self.engine, decode_event(record.body), record.offset, record.partition, record.ingested_at)
            batch.records.append(record)
        if records:
            self.event_time.took(self.clock.time(), records[-1].ingested_at)
        batch.changes += self.engine.take_changes()

    def commit(self, batch: Batch[Record]) -> None:
        if not batch.records and batch.empty:
            return
        offset = batch.records[-1].offset if batch.records else self.offset
        now = self.clock.time()
        created = self.store.commit_batch(batch.signals, batch.checkpoint(self.name, offset), now)
        self.offset = offset
        if batch.signals:
            self.on_alerts()
        m = self.metrics
        m.events_processed.inc(batch.processed)
        m.events_late.inc(len(batch.late))
        m.events_quarantined.inc(len(batch.quarantined))
        m.processor_lag.set(max(0, self.log.head() - offset))
        m.engine_state_keys.set(self.engine.state_size())
        for s in batch.signals:
            m.rule_hits.labels(s.rule_id, s.mode).inc()
            if s.mode == "live":
                m.ingest_to_alert.observe(max(0.0, now - s.ingested_at))
        for _, signal in created:
            m.alerts.labels(signal.severity, signal.audience).inc()

    def reset(self, records: Sequence[Record] | None = None) -> None:
        """After a failed commit the in-memory state is ahead of the store: reload it."""
        fresh = Engine(self.engine.pack, self.engine.allowed_lateness_s)
        fresh.lists = self.engine.lists
        fresh.hits = self.engine.hits
        self.engine = fresh
        self.recover()

    def uncommitted(self, records: Sequence[Record]) -> Sequence[Record]:
        return [r for r in records if r.offset > self.offset]

    def poisoned(self, record: Record, error: Exception) -> QuarantinedEvent:
        return QuarantinedEvent.of(
            record.body, record.offset, record.partition, record.ingested_at, error, self.engine.pack.version
        )

    def transient(self, error: Exception) -> bool:
        return is_store_failure(error)

    def expired(self, watermark: float) -> None:
        """The journal keeps nothing per key beside the engine state."""

    # -- re-drives, housekeeping ---------------------------------------------------------------

    def _redrive(self) -> None:
        """Run the quarantined events an admin asked to re-drive (one commit each)."""
        now = self.clock.time()
        if not self._redrive_due and now - self._redrive_checked < REDRIVE_CHECK_S:
            return
        self._redrive_checked = now
        for entry in self.quarantine.requested():
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
            one.changes = self.engine.take_changes()
            self.commit(one)
            log.info("re-drove quarantined event %s/%s (entry %d)", e.source, e.event_id, entry.id)
        except Exception as error:
            if is_store_failure(error):
                raise
            self.reset()
            self.commit(Batch(quarantined=[self.poisoned(record, error)]))
            log.error("re-driven event %s/%s failed again (%s)", e.source, e.event_id, type(error).__name__)

    def _housekeeping(self) -> None:
        """Caught up: write engine state behind, and apply retention."""
        now = self.clock.time()
        self.store.write_state_behind(now)
        if self.retention_s is not None and now - self._last_retention >= RETENTION_EVERY_S:
            self._last_retention = now
            deleted = self.log.delete_older_than(now - self.retention_s, self.offset)
            self.store.conn().execute("DELETE FROM late_events WHERE ingested_at < ?", (now - self.retention_s,))
            if deleted:
                log.info("retention deleted %d processed events from the log", deleted)

    def run(self, stop: threading.Event, idle_wait_s: float = 0.05) -> None:
        """Process until ``stop`` is set, sleeping on :attr:`wakeup` when caught up."""
        # this thread's store connection writes engine state at random keys: a large page cache
        self.store.conn().execute(f"PRAGMA cache_size=-{WRITER_CACHE_MIB * 1024}")
        while not stop.is_set():
            try:
                processed = self.run_once()
            except Exception as error:
                # the driver isolated what one event can cause: this is the store's, or no event's
                log.warning("processor step failed (%s); retrying from offset %d", type(error).__name__, self.offset)
                self._reset_quietly()
                stop.wait(STORE_RETRY_S)
                continue
            if processed == 0:
                self.wakeup.wait(idle_wait_s)
                self.wakeup.clear()

    def _reset_quietly(self) -> None:
        """Reset to the checkpoint, or leave it to the next retry if the store is still down."""
        try:
            self.reset()
        except Exception as error:
            log.warning("cannot reload the checkpoint yet (%s)", type(error).__name__)
