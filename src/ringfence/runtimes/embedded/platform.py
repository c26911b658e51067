"""The embedded runtime: log, processor, store and API in one process, zero infrastructure.

:class:`Platform` wires the parts together over the data dir; ``ringfence up`` serves its
ASGI app with uvicorn, and :func:`ringfence.bench.servers.run_embedded` runs it in tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ringfence.alerts.config import load_alerting
from ringfence.alerts.dispatcher import Dispatcher
from ringfence.alerts.stream import AlertStream
from ringfence.clock import Clock, SystemClock
from ringfence.config import Settings, audit_key
from ringfence.engine.anomaly import require_models
from ringfence.engine.engine import Engine
from ringfence.engine.native import check_runnable, make_engine
from ringfence.engine.pack import RulePack
from ringfence.errors import RequestError, RingfenceError, StoreError
from ringfence.events.fx import FxRate, FxTable
from ringfence.metrics import Metrics
from ringfence.private_files import open_private, private_dir
from ringfence.ratelimit import Buckets
from ringfence.runtimes.backtest import BacktestChild, BacktestJob, start_child
from ringfence.runtimes.disk import DiskGuard
from ringfence.runtimes.embedded.backtest import CHILD_MODULE
from ringfence.runtimes.embedded.group_commit import GroupCommitter
from ringfence.runtimes.embedded.ingest_worker import IngestWorker
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.processor import Processor
from ringfence.runtimes.embedded.progress_anchor import ProgressAnchor
from ringfence.runtimes.ingest import IngestService
from ringfence.runtimes.memory import MemoryGuard
from ringfence.store.budgets import StoredBuckets
from ringfence.store.fx import followed_rates
from ringfence.store.keys import ApiKeys
from ringfence.store.notifications import SqlNotificationLog
from ringfence.store.packs import ListValues, PackRepository, PackVersion
from ringfence.store.quarantine import QuarantineEntry, QuarantineRepository
from ringfence.store.silences import SqlSilenceStore
from ringfence.store.sqlite import SqliteStore

log = logging.getLogger("ringfence.embedded")

JOURNAL_FILE = "journal.sqlite3"
STORE_FILE = "store.sqlite3"
# beside the journal, not the store: a store restored from a backup comes with its own files
PROGRESS_ANCHOR_FILE = JOURNAL_FILE + "-processed"
LOCK_FILE = "processor.lock"
FEATURE_READS = 5  # tries at reading a customer's features while the processor thread resizes a state
# readiness: a store that fails this long is no passing lock
PROCESSOR_FAILING_S = 5.0
MAX_ARRIVALS = 100_000
RESTORE_WAIT_S = 2.0  # start() waits this long for the checkpoint's state before serving without it


class DataDirLock:
    """The data dir's processor lock: two processors on one log would double alerts.

    The lock file (which names the process holding it) is locked, and so is the data dir
    itself: a lock file deleted under a running server (a clean-up of "stale" locks) would let
    a second one lock a new file, but a directory in use cannot be replaced. Both locks die
    with the process, so a kill -9 never leaves them stale.
    """

    def __init__(self, data_dir: Path) -> None:
        private_dir(data_dir)
        self._dir: int | None = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        self._file: IO[str] | None = None
        try:
            self._take(self._dir, data_dir)
            self._file = open_private(data_dir / LOCK_FILE)  # held for the platform's lifetime
            self._take(self._file.fileno(), data_dir)  # what a release before the dir's lock takes
        except BaseException:
            self.close()
            raise
        self._file.truncate(0)
        self._file.write(str(os.getpid()))
        self._file.flush()

    @staticmethod
    def _take(fd: int, data_dir: Path) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"another Ringfence process is running on {data_dir}; stop it, or send to it with --url"
            ) from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._dir is not None:
            os.close(self._dir)
            self._dir = None


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Take the data dir's processor lock (:class:`DataDirLock`); StoreError if another process
    holds it."""
    return DataDirLock(data_dir)


def open_store(data_dir: Path) -> SqliteStore:
    """The store of a data dir, created if needed (used by the CLI too, so both chain the audit
    trail with one key: the configured secret, else the data dir's ``audit.key``)."""
    private_dir(data_dir)
    return SqliteStore(data_dir / STORE_FILE, audit_key())


class Platform:
    """Everything the embedded runtime runs, over one data dir; the API's
    :class:`~ringfence.api.platform.Platform`, serving every capability."""

    runtime = "embedded"

    def __init__(self, settings: Settings, clock: Clock | None = None, pack: RulePack | None = None) -> None:
        self.settings = settings
        self._lock: DataDirLock | None = lock_data_dir(settings.data_dir)
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.memory = MemoryGuard(settings.min_free_memory_mib * 2**20)
        self.disk = DiskGuard(settings.data_dir, settings.min_free_disk_mib * 2**20)
        try:
            self.store = open_store(settings.data_dir)
        except StoreError:
            self._lock.close()  # the data dir is free again for whoever puts it right
            raise
        try:
            self.store.check_anchored_head()  # not one emptied or rolled back: it would send every alert again
        except StoreError:
            self.store.close()
            self._lock.close()
            raise
        self.keys = ApiKeys(self.store)
        self.alerts = self.triage = self.records = self.store
        self.silences = SqlSilenceStore(self.store)
        self.notifications = SqlNotificationLog(self.store)
        self.quarantine = QuarantineRepository(self.store)
        self.log = SqliteLog(
            settings.data_dir / JOURNAL_FILE,
            settings.partitions,
            settings.journal_sync,
            segment_s=settings.journal_segment_s,
        )
        self.packs = PackRepository(self.store)
        self.fx = followed_rates(self.store, settings, self.clock.time())
        self.fx.expose(self.metrics, self.clock.time)
        pack = pack or self.packs.startup_pack(settings.rule_pack, self.clock.time())
        engine = make_engine(pack, settings.allowed_lateness_s, engine=settings.engine)
        for name, values in self.packs.lists().items():  # through set_list: the compiled core holds its own copy
            if name in pack.lists:
                engine.set_list(name, values)
        progress = ProgressAnchor(settings.data_dir / PROGRESS_ANCHOR_FILE)
        self.processor = Processor(
            self.log,
            self.store,
            engine,
            self.metrics,
            self.clock,
            retention_s=settings.log_retention_s,
            progress=progress,
        )
        processed, head = self.store.load_checkpoint(self.processor.name)[0], self.log.head()
        try:
            if processed > head:  # its new events would take offsets the store marks processed: taken (202), never run
                raise StoreError(
                    f"the store has processed the journal up to offset {processed}, but the journal ends at "
                    f"{head}: it was deleted, replaced or rolled back. Put back the journal kept with this store, "
                    "or start from another data dir"
                )
            progress.check(processed)  # not one rolled back: it would notify its alerts again
        except RingfenceError:  # StoreError, or UnsafeFile (an anchor planted as a link)
            self.log.close()
            self.store.close()
            self._lock.close()
            raise
        self.stream = AlertStream()
        self.dispatcher = Dispatcher(
            self.store,
            load_alerting(settings.alerting),
            self.clock,
            self.metrics,
            self.stream,
            auto_resolve=lambda: self.pack.auto_resolve,
        )
        self.processor.on_alerts = self.dispatcher.wakeup.set
        self._head = 0
        self._head_lock = threading.Lock()
        # (head, when) of each commit that moved the head, back to the processed offset: how long
        # the oldest event not processed yet has waited (ingest's backpressure by time)
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()
        self.committer: GroupCommitter | None = None
        self.ingest_worker: IngestWorker | None = None
        self.ingest: IngestService | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dispatch_thread: threading.Thread | None = None
        self._accepting = False

    @property
    def accepting(self) -> bool:
        """Started, not stopping, its processor not stopped on a checkpoint it cannot read, and
        the journal's writer thread not ended by a bug (then only a restart takes events again)."""
        writing = self.committer is None or self.committer.alive
        return self._accepting and self.processor.failure is None and writing

    @property
    def ready(self) -> bool:
        """Taking events, and the processor has restored its state since the start (a later
        reload after a failed step is not a restart: the platform stays ready through it)."""
        return self.accepting and self.processor.started.is_set()

    def unready_reason(self) -> str | None:
        """Why it should not be sent events although it takes them: its processor has failed to
        commit for a while (a store it cannot write: what arrives is kept but not processed), or
        the data dir's disk or memory is nearly out (ingest refuses everything:
        :mod:`ringfence.runtimes.disk`, :mod:`ringfence.runtimes.memory`)."""
        failing = self.processor.failing  # once: its writer thread may clear it meanwhile
        if failing is not None:
            since, why = failing
            failing_s = self.clock.time() - since
            if failing_s >= PROCESSOR_FAILING_S:
                return f"the processor has failed for {failing_s:.0f} s ({why}); events are kept, not processed"
        return self.shortage()

    def shortage(self) -> str | None:
        """Why ingest refuses every producer now (the disk or memory nearly out), or None."""
        return self.disk.shortage() or self.memory.shortage()

    def changes_refused(self) -> str | None:
        return self.disk.changes_shortage()

    def budget(self, kind: str, rate: float, burst: float) -> Buckets:
        return StoredBuckets(self.store, kind, rate, burst, self.clock)

    @property
    def engine(self) -> Engine:
        """The processor's current engine (replaced by a hot reload)."""
        return self.processor.engine

    @property
    def pack(self) -> RulePack:
        return self.processor.engine.pack

    def _on_commit(self, head: int) -> None:
        """A writer (the ingest worker, or this process's committer) made ``head`` durable."""
        with self._head_lock:  # two writers report; the head never goes back
            if head > self._head:
                self._arrivals.append((head, self.clock.time()))
                if len(self._arrivals) > MAX_ARRIVALS:  # the bound on lag bounds it first, mostly
                    self._arrivals.popleft()
            self._head = max(self._head, head)
            self.metrics.log_head.set(self._head)
        self.processor.wakeup.set()

    def redrive_quarantined(self, entry_id: int, actor: str) -> QuarantineEntry:
        """Hand a quarantined event back to the processor, which runs it at its next batch (audited)."""
        entry = self.quarantine.request_redrive(entry_id, actor, self.clock.time())
        self.processor.request_redrive()
        return entry

    def notification_redriven(self) -> None:
        self.dispatcher.wakeup.set()

    def processed_offset(self) -> int:
        return self.processor.offset

    def lag(self) -> int:
        """Events in the log not yet processed."""
        return max(0, self._head - self.processor.offset)

    def lag_s(self) -> float:
        """How long the oldest event not processed yet has waited (0 when none waits): from when
        the commit that made it durable reported its head. (The wait of the newest processed
        one said it only once the events behind it had waited as long.)"""
        processed = self.processor.offset
        with self._head_lock:
            while self._arrivals and self._arrivals[0][0] <= processed:
                self._arrivals.popleft()
            oldest = self._arrivals[0][1] if self._arrivals else None
        return max(0.0, self.clock.time() - oldest) if oldest is not None else 0.0

    def wait_s(self) -> float:
        """How long an event taken now would wait to be processed, for backpressure: what is
        ahead of it at the rate the processor gets through events while busy, or the oldest
        waiting event's wait if longer. That wait alone said 5 s only once 34 s of costly events
        were taken (one key's alert-raising events, taken at 17,000 a second and processed at
        3,000: a re-test)."""
        oldest, lag, rate = self.lag_s(), self.lag(), self.processor.pace.rate()
        return max(oldest, lag / rate) if rate else oldest

    def shared_totals(self) -> dict[str, float]:
        return {}  # one process does it all: its counters are the totals

    def customer_features(self, customer_id: str) -> tuple[float, dict[str, Any]]:
        """Read on the caller's thread, at the latest event time the engine has seen."""
        if not (self.accepting and self.processor.recovered.is_set()):
            raise RequestError(503, "unavailable", "the platform is restoring its state; try again shortly")
        engine = self.engine
        latest = max(engine.max_event_time.values(), default=-math.inf)
        at = latest if math.isfinite(latest) else self.clock.time()
        for _ in range(FEATURE_READS):
            try:
                return at, engine.features_of({"customer_id": customer_id}, at)
            except RuntimeError:  # a state changed size while it was read
                continue
        return at, {}

    def active_pack(self) -> PackVersion | None:
        return self.packs.active()

    def check_pack(self, pack: RulePack) -> None:
        check_runnable(pack, self.settings.engine)

    def dropped_state(self, pack: RulePack) -> list[str]:
        return self.engine.dropped_state_names(pack)

    def activate_pack(self, pack: RulePack, actor: str, now: float) -> PackVersion:
        require_models(pack.anomalies)  # the processor builds the engine later: a pack it cannot is not stored
        version = self.packs.activate(pack, actor, now)
        self.processor.request_reload(pack)
        for name, values in self.packs.lists().items():  # edits stand, as after a restart
            if name in pack.lists:
                self.processor.request_list(name, values)
        return version

    def list_values(self, name: str) -> frozenset[str]:
        return self.engine.lists.get(name, frozenset())

    def put_list(self, name: str, values: list[str], actor: str, now: float) -> ListValues:
        saved = self.packs.put_list(name, values, actor, now, self.pack.lists[name])
        self.processor.request_list(name, frozenset(saved.values))
        return saved

    def fx_table(self) -> FxTable:
        return self.fx.table

    def load_fx(self, rates: list[FxRate], actor: str, now: float) -> FxTable:
        return self.fx.load(rates, actor, now)

    async def backtest(self, candidate: RulePack, limit: int, actor: str, on_exit: Callable[[], None]) -> BacktestChild:
        """In a child process over the journal (:mod:`ringfence.runtimes.backtest`)."""
        await asyncio.to_thread(self.packs.record_backtest, candidate, limit, actor, self.clock.time())
        edited = await asyncio.to_thread(self.packs.lists)  # lists edited at run time: theirs win in both packs
        job = BacktestJob(
            journal=str(self.log.path),
            after=max(0, await asyncio.to_thread(self.log.head) - limit),
            limit=limit,
            live=self.pack.text,
            candidate=candidate.text,
            lists={name: sorted(values) for name, values in edited.items()},
            budget_s=self.settings.backtest_time_budget_s,
        )
        return await start_child(job, CHILD_MODULE, on_exit=on_exit)

    def start(self) -> None:
        """Start the writer and the processor, which first restores the last checkpoint.

        Events are taken at once (the journal does not need the engine), and the processor's
        lag counts from the checkpoint's offset. This waits up to ``RESTORE_WAIT_S`` for the
        restore, so a small state is back before the API serves; a large one (a million
        customers take several seconds) goes on while it serves, ``/readyz`` answering 503
        until it is done."""
        self.processor.load_offset()
        self._head = self.log.head()
        self.committer = GroupCommitter(self.log, self.clock.time, self._on_commit)
        if self.settings.ingest_process:
            self.ingest_worker = IngestWorker(
                self.settings.data_dir / JOURNAL_FILE,
                self.settings.partitions,
                self.settings.journal_sync,
                self.settings.journal_segment_s,
                self._on_commit,
            )
        self.ingest = IngestService(
            self.committer,
            self.metrics,
            self.clock,
            max_batch_events=self.settings.max_batch_events,
            max_lag_events=self.settings.max_lag_events,
            lag=self.lag,
            lag_s=self.wait_s,
            shortage=self.shortage,
            custom_types=lambda: self.pack.custom_types,
            worker=self.ingest_worker,
            fx=lambda: self.fx.table,
        )
        self.fx.start()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.processor.run, args=(self._stop,), name="ringfence-processor", daemon=True
        )
        self._thread.start()
        self._dispatch_thread = threading.Thread(
            target=self.dispatcher.run, args=(self._stop,), name="ringfence-dispatcher", daemon=True
        )
        self._dispatch_thread.start()
        self._accepting = True
        restored = self.processor.started.wait(RESTORE_WAIT_S)
        log.info(
            "embedded platform started on %s (log head %d, processed %d)%s",
            self.settings.data_dir,
            self._head,
            self.processor.offset,
            "" if restored else "; taking events while the processor restores its state",
        )

    def stop(self) -> None:
        """Stop accepting, drain the writer, let the processor finish its batch, close files."""
        self._accepting = False
        self.fx.stop()
        if self.ingest_worker is not None:
            self.ingest_worker.close()
            self.ingest_worker = None
        if self.committer is not None:
            self.committer.close()
        self._stop.set()
        self.processor.wakeup.set()
        self.dispatcher.wakeup.set()
        for thread in (self._thread, self._dispatch_thread):
            if thread is not None:
                thread.join(timeout=30)
        self.dispatcher.close()
        self.log.close()
        self.keys.close()
        self.store.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        log.info("embedded platform stopped at offset %d", self.processor.offset)
