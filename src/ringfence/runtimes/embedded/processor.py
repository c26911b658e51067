"""The processor: reads the log in order, runs the engine, and commits the resulting alerts
together with the engine state and the offset they reflect.

Used by the embedded runtime (a thread); one instance owns every partition of its log.

A batch that fails is told apart by what failed. The store or the disk (a locked database,
an I/O error): the batch is retried as it is until the store is back. Anything else: the
batch is retried once, event by event from the checkpointed state, and each event that the
decoder, the engine or the state codec cannot handle is *quarantined* (see
:mod:`ringfence.store.quarantine`) in the same transaction as the alerts, state and offset of
the events before it, so a poison event neither stops processing nor leaves anything of
itself in the state. Quarantined events an admin re-drives are run again at a batch boundary.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ringfence.clock import Clock
from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal
from ringfence.events.model import decode_event
from ringfence.log.base import EventLog, Record
from ringfence.metrics import Metrics
from ringfence.store.base import Checkpoint, LateEvent
from ringfence.store.quarantine import (
    QuarantinedEvent,
    QuarantineEntry,
    QuarantineRepository,
    is_store_failure,
    reason_of,
)
from ringfence.store.sqlite import SqliteStore
from ringfence.store.state_log import StateRow

log = logging.getLogger("ringfence.processor")

BATCH_SIZE = 2_000
EXPIRE_EVERY_S = 30.0
RETENTION_EVERY_S = 60.0
WRITER_CACHE_MIB = 64
STORE_RETRY_S = 1.0
REDRIVE_CHECK_S = 5.0  # re-drives asked for elsewhere (the CLI) are looked for this often


@dataclass
class _Batch:
    """What one commit carries: the alerts, state and late events of the events processed,
    and the events quarantined or re-driven."""

    signals: list[AlertSignal] = field(default_factory=list)
    late: list[LateEvent] = field(default_factory=list)
    marks: dict[int, float] = field(default_factory=dict)  # partitions' max event time after the events
    changes: list[StateRow] = field(default_factory=list)
    quarantined: list[QuarantinedEvent] = field(default_factory=list)
    redriven: list[int] = field(default_factory=list)
    processed: int = 0

    def merge(self, other: _Batch) -> None:
        """Append a later single-event batch (the event-by-event retry)."""
        self.signals += other.signals
        self.late += other.late
        self.marks.update(other.marks)
        self.changes += other.changes
        self.processed += other.processed


class _BatchFailed(Exception):
    """Processing or committing the records of a batch failed (the cause says why); failures
    elsewhere (timers, housekeeping, re-drives) are retried after a pause instead."""


class Processor:
    """Log -> engine -> store, with checkpoints. Call :meth:`recover` before running."""

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
        self._last_expire = 0.0
        self._last_retention = 0.0
        self._last_record_at = clock.time()
        self._last_ingested_at = clock.time()
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
        if not records:
            self._idle()
            return 0
        self._last_record_at = self.clock.time()
        self._last_ingested_at = records[-1].ingested_at
        batch = _Batch()
        try:
            for record in records:
                self._step(record, batch)
            batch.changes = self.engine.take_changes()
            self._commit(batch, records[-1].offset)
        except Exception as error:
            raise _BatchFailed from error
        return len(records)

    def _step(self, record: Record, batch: _Batch) -> None:
        """Decode one record and run it through the engine, adding its results to ``batch``."""
        event = decode_event(record.body)
        watermark = self.engine.watermark(record.partition)
        batch.signals.extend(self.engine.process(event, record.offset, record.partition, record.ingested_at))
        if event.occurred_at < watermark:
            batch.late.append(LateEvent.of(event, record.offset, watermark, record.ingested_at))
        if record.partition in self.engine.max_event_time:
            batch.marks[record.partition] = self.engine.max_event_time[record.partition]
        batch.processed += 1

    def _commit(self, batch: _Batch, offset: int) -> None:
        """Commit ``batch`` with the checkpoint at ``offset``, in one transaction."""
        checkpoint = Checkpoint(
            name=self.name,
            offset=offset,
            state_changes=batch.changes,
            watermarks=batch.marks,
            late_events=batch.late,
            quarantined=batch.quarantined,
            redriven=batch.redriven,
        )
        created = self.store.commit_batch(batch.signals, checkpoint, self.clock.time())
        self.offset = offset
        if batch.signals:
            self.on_alerts()
        self._observe(offset, batch.processed, batch.signals, created, len(batch.late))
        self.metrics.events_quarantined.inc(len(batch.quarantined))

    # -- poison events ---------------------------------------------------------------------

    def _after_failure(self, error: Exception) -> bool:
        """A batch failed: retry it event by event unless the store failed. True if it went on."""
        if is_store_failure(error):
            log.warning("processor batch failed on the store (%s); retrying from offset %d", error, self.offset)
            self._reset_quietly()
            return False
        log.error(
            "processor batch failed at offset %d (%s); retrying it event by event", self.offset, type(error).__name__
        )
        try:
            self._isolate()
        except Exception as again:
            log.warning("event-by-event retry stopped (%s); retrying from offset %d", type(again).__name__, self.offset)
            self._reset_quietly()
            return False
        return True

    def _isolate(self) -> None:
        """Run the failed batch again, event by event, and quarantine each event that fails.

        The good events are committed together (with each quarantined event and the offset
        past it); should such a commit fail for something a store retry cannot mend (an alert
        the store cannot take), the rest is run again committing every event on its own.
        """
        self._reset_engine_to_checkpoint()
        try:
            self._run_isolated(commit_each=False)
        except Exception as error:
            if is_store_failure(error):
                raise
            log.warning("a commit of the event-by-event retry failed (%s): one commit per event", type(error).__name__)
            self._reset_engine_to_checkpoint()
            self._run_isolated(commit_each=True)

    def _run_isolated(self, commit_each: bool) -> None:
        records = self.log.read(self.offset, BATCH_SIZE)
        batch = _Batch()
        for record in records:
            one = _Batch()
            try:
                self._step(record, one)
                one.changes = self.engine.take_changes()  # the state codec runs per event here
                if commit_each:
                    self._commit(one, record.offset)
                else:
                    batch.merge(one)
            except Exception as error:
                if is_store_failure(error):
                    raise
                # what the event did to the in-memory state is dropped with it: back to the
                # checkpoint, which then holds every event before it
                batch.quarantined.append(self._quarantined(record, error))
                self._commit(batch, record.offset)
                batch = _Batch()
                self._reset_engine_to_checkpoint()
        if records and (batch.processed or batch.signals) and not commit_each:
            self._commit(batch, records[-1].offset)
        if records:
            self._last_record_at = self.clock.time()
            self._last_ingested_at = records[-1].ingested_at

    def _quarantined(self, record: Record, error: Exception) -> QuarantinedEvent:
        entry = QuarantinedEvent.of(
            record.body, record.offset, record.partition, record.ingested_at, error, self.engine.pack.version
        )
        # the reason names the exception only: its message may quote the event's data
        log.error(
            "quarantined event %s/%s (%s) at offset %d: %s",
            entry.source,
            entry.event_id,
            entry.type,
            record.offset,
            type(error).__name__,
        )
        return entry

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
        e = entry.event
        record = Record(e.offset, e.partition, e.ingested_at, e.body)
        one = _Batch(redriven=[entry.id])
        try:
            self._step(record, one)
            one.late.clear()  # an old event run now is late by nature; it was not late when it came
            one.changes = self.engine.take_changes()
            self._commit(one, self.offset)
            log.info("re-drove quarantined event %s/%s (entry %d)", e.source, e.event_id, entry.id)
        except Exception as error:
            if is_store_failure(error):
                raise
            self._reset_engine_to_checkpoint()
            again = replace(e, reason=reason_of(error), pack_version=self.engine.pack.version)
            self._commit(_Batch(quarantined=[again]), self.offset)
            log.error("re-driven event %s/%s failed again (%s)", e.source, e.event_id, type(error).__name__)

    def _observe(
        self, offset: int, count: int, signals: list[AlertSignal], created: list[tuple[str, AlertSignal]], late: int
    ) -> None:
        now = self.clock.time()
        m = self.metrics
        m.events_processed.inc(count)
        m.events_late.inc(late)
        m.processor_lag.set(max(0, self.log.head() - offset))
        m.engine_state_keys.set(self.engine.state_size())
        for s in signals:
            m.rule_hits.labels(s.rule_id, s.mode).inc()
            if s.mode == "live":
                m.ingest_to_alert.observe(max(0.0, now - s.ingested_at))
        for _, signal in created:
            m.alerts.labels(signal.severity, signal.audience).inc()

    def _idle(self) -> None:
        """Caught up: let event time run on with the wall clock, so absence timers of quiet
        keys still fire. Event time is extrapolated from the last event by the wall-clock time
        since it arrived, so a replay of old events is not closed early by today's clock."""
        now = self.clock.time()
        lateness = self.engine.allowed_lateness_s
        if len(self.engine.timers) and now - self._last_record_at >= lateness and self.engine.max_event_time:
            latest = max(self.engine.max_event_time.values())
            signals = self.engine.advance(latest + (now - self._last_ingested_at) - lateness)
            if signals:
                self._commit(_Batch(signals=signals, changes=self.engine.take_changes()), self.offset)
        self._housekeeping()

    def _housekeeping(self) -> None:
        now = self.clock.time()
        self.store.write_state_behind(now)  # idle time writes the engine state behind
        if now - self._last_expire >= EXPIRE_EVERY_S and self.engine.max_event_time:
            self._last_expire = now
            # never past the wall clock: events a few minutes ahead must not expire others' state early
            watermark = min(*self.engine.max_event_time.values(), now) - self.engine.allowed_lateness_s
            if self.engine.expire(watermark):
                self.store.commit_batch([], Checkpoint(self.name, self.offset, self.engine.take_changes()), now)
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
            except _BatchFailed as failed:
                cause = failed.__cause__ if isinstance(failed.__cause__, Exception) else failed
                if not self._after_failure(cause):
                    stop.wait(STORE_RETRY_S)
                continue
            except Exception as error:
                # not one event's fault: no event-by-event retry, which would find nothing and spin
                log.warning("processor step failed (%s); retrying from offset %d", type(error).__name__, self.offset)
                self._reset_quietly()
                stop.wait(STORE_RETRY_S)
                continue
            if processed == 0:
                self.wakeup.wait(idle_wait_s)
                self.wakeup.clear()

    def _reset_engine_to_checkpoint(self) -> None:
        """After a failed commit the in-memory state is ahead of the store: reload it."""
        fresh = Engine(self.engine.pack, self.engine.allowed_lateness_s)
        fresh.lists = self.engine.lists
        fresh.hits = self.engine.hits
        self.engine = fresh
        self.recover()

    def _reset_quietly(self) -> None:
        """Reset to the checkpoint, or leave it to the next retry if the store is still down."""
        try:
            self._reset_engine_to_checkpoint()
        except Exception as error:
            log.warning("cannot reload the checkpoint yet (%s)", type(error).__name__)
