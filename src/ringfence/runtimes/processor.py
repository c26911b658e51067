"""The processor: reads the log in order, runs the engine, and commits the resulting alerts
together with the engine state and the offset they reflect.

Used by the embedded runtime (a thread); one instance owns every partition of its log.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from ringfence.clock import Clock
from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal
from ringfence.events.model import decode_event
from ringfence.log.base import EventLog
from ringfence.metrics import Metrics
from ringfence.store.base import Checkpoint, LateEvent
from ringfence.store.sqlite import SqliteStore

log = logging.getLogger("ringfence.processor")

BATCH_SIZE = 2_000
EXPIRE_EVERY_S = 30.0
RETENTION_EVERY_S = 60.0
WRITER_CACHE_MIB = 64


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
        records = self.log.read(self.offset, BATCH_SIZE)
        if not records:
            self._idle()
            return 0
        self._last_record_at = self.clock.time()
        self._last_ingested_at = records[-1].ingested_at
        signals: list[AlertSignal] = []
        late: list[LateEvent] = []
        touched: set[int] = set()
        for record in records:
            event = decode_event(record.body)
            watermark = self.engine.watermark(record.partition)
            hits = self.engine.process(event, record.offset, record.partition, record.ingested_at)
            if event.occurred_at < watermark:
                late.append(LateEvent.of(event, record.offset, watermark, record.ingested_at))
            touched.add(record.partition)
            signals.extend(hits)
        checkpoint = Checkpoint(
            name=self.name,
            offset=records[-1].offset,
            state_changes=self.engine.take_changes(),
            watermarks={p: self.engine.max_event_time[p] for p in touched if p in self.engine.max_event_time},
            late_events=late,
        )
        now = self.clock.time()
        created = self.store.commit_batch(signals, checkpoint, now)
        self.offset = checkpoint.offset
        if signals:
            self.on_alerts()
        self._observe(records[-1].offset, len(records), signals, created, len(late))
        return len(records)

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
                checkpoint = Checkpoint(self.name, self.offset, self.engine.take_changes())
                created = self.store.commit_batch(signals, checkpoint, now)
                self._observe(self.offset, 0, signals, created, 0)
        self._housekeeping()

    def _housekeeping(self) -> None:
        now = self.clock.time()
        self.store.write_state_behind(now)  # idle time writes the engine state behind
        if now - self._last_expire >= EXPIRE_EVERY_S and self.engine.max_event_time:
            self._last_expire = now
            watermark = min(self.engine.max_event_time.values()) - self.engine.allowed_lateness_s
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
            except Exception:
                log.exception("processor batch failed; retrying from offset %d", self.offset)
                self._reset_engine_to_checkpoint()
                stop.wait(1.0)
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
