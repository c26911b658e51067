"""What the HTTP API stands on in the kafka runtime (``serve ingest``, ``serve api``): its
:class:`~ringfence.api.platform.Platform`.

The same routes as the embedded runtime's, over PostgreSQL (alerts, keys, rules, silences,
audit) and Kafka (the events topic: its offsets, an alert's evidence events by offset, a
customer's recent events searched in their partition, back-tests replaying its newest
records in a child process). A customer's current feature values, which live in the memory
of the process worker holding them, are asked of it (:mod:`.queries`). The process and
dispatch services run elsewhere and follow the store: a new pack, a list or a re-driven
notification reaches them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from ringfence.alerts.stream import AlertStream
from ringfence.clock import Clock, SystemClock
from ringfence.config import Settings, audit_key
from ringfence.engine.engine import Engine
from ringfence.engine.native import check_runnable
from ringfence.engine.pack import RulePack, load_pack
from ringfence.engine.stages import plan_stages, refuse_shared_stage_names
from ringfence.errors import RequestError
from ringfence.events.fx import FxRate, FxTable
from ringfence.log.base import Record
from ringfence.metrics import Metrics
from ringfence.ratelimit import Buckets
from ringfence.runtimes.backtest import BacktestChild, BacktestJob, KafkaSource, start_child
from ringfence.runtimes.ingest import IngestService
from ringfence.runtimes.kafka.alert_feed import FeedFollower
from ringfence.runtimes.kafka.backtest import newest
from ringfence.runtimes.kafka.ingest import KafkaAppender
from ringfence.runtimes.kafka.queries import TIMEOUT_S as FEATURE_TIMEOUT_S
from ringfence.runtimes.kafka.queries import FeatureClient
from ringfence.runtimes.kafka.ranges import READER_CONFIG, Range, ReadFailed, read_merged
from ringfence.runtimes.kafka.records import OFFSET_BITS, global_offset, partition_for
from ringfence.runtimes.kafka.shared_counters import CountersPublisher, shared_totals
from ringfence.runtimes.kafka.topics import client_config, topics_of
from ringfence.store.budgets import StoredBuckets
from ringfence.store.fx import followed_rates
from ringfence.store.keys import ApiKeys
from ringfence.store.notifications import SqlNotificationLog
from ringfence.store.packs import ListValues, PackRepository, PackVersion
from ringfence.store.postgres import PostgresStore
from ringfence.store.quarantine import QuarantineEntry, QuarantineRepository
from ringfence.store.silences import SqlSilenceStore

log = logging.getLogger("ringfence.kafka.api")

LAG_CACHE_S = 1.0
OFFSETS_TIMEOUT_S = 5.0  # a read of the offsets, all its calls, gives up after (the last one stays)
SCAN_RECORDS = 200_000  # offsets of a partition, at most, searched for a customer's recent events
SCAN_CHUNK = 5_000  # read at a time, newest first
SCAN_S = 5.0  # a search's time, at most
SCAN_WAIT_S = 0.5  # for another's search to end, at most (then 503)
SCANNERS = 3  # searches under way at once: a key has one at most (the API's), so one key never holds them all
RECORD_S = 2.0  # a read of one record (evidence), at most
RETRY = {"retry_after": 1}
PACK_EVERY_S = 5.0


class _Customer(msgspec.Struct):
    customer_id: str | None = None
    source: str = ""
    event_id: str = ""


_customer = msgspec.json.Decoder(_Customer)


def _first_copies(found: list[tuple[Record, _Customer]]) -> list[Record]:
    """``found`` (newest first, each with its envelope) with each event once: its first copy,
    the one the workers processed (a producer's retry that ingest let through is a later
    record, which they drop)."""
    first_sent = {(envelope.source, envelope.event_id): i for i, (_, envelope) in enumerate(found)}  # the last wins
    return [record for i, (record, e) in enumerate(found) if first_sent[(e.source, e.event_id)] == i]


def _record(partition: int, message: Any) -> Record:
    offset = global_offset(partition, int(message.offset() or 0))
    return Record(offset, partition, message.timestamp()[1] / 1000.0, message.value() or b"")


def _envelope_of(body: bytes) -> _Customer | None:
    """The envelope's customer and identity (a record keyed by a service could name the customer too)."""
    try:
        return _customer.decode(body)
    except msgspec.DecodeError:
        return None


def open_postgres(settings: Settings) -> PostgresStore:
    """The kafka runtime's store; raises StoreError if unreachable or not migrated."""
    from ringfence.errors import ConfigError

    if not settings.postgres_dsn:
        raise ConfigError("the kafka runtime needs postgres_dsn (RINGFENCE_POSTGRES_DSN=postgresql://user@host/db)")
    key = audit_key()
    if key is None:  # services on several machines share the trail: one key, from the secret
        raise ConfigError(
            "the kafka runtime needs RINGFENCE_SECRET_AUDIT_KEY (a random secret, the same for every service)"
        )
    store = PostgresStore(settings.postgres_dsn, key, settings.postgres_pool_size)
    store.require_schema()
    return store


class KafkaLog:
    """The events topic as the API reads it: offsets and lag, one record by position, a
    customer's newest, the ranges a back-test replays."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer

        self.topics = topics_of(settings)
        self.settings = settings
        group = {"group.id": self.topics.group("process")}  # joins no group: reads its committed offsets
        # three readers, each behind a lock of its own, so none holds the others up: offsets
        # (the lag, a back-test's ranges), single records (evidence), scans (a customer's events)
        self._consumer = Consumer(client_config(settings, **group, **{"enable.auto.commit": False}))
        self._lock = threading.Lock()
        # an offset retention removed is an error at once (not a wait for the next record)
        self._records = Consumer(client_config(settings, **group, **(READER_CONFIG | {"auto.offset.reset": "error"})))
        self._records_lock = threading.Lock()
        self._scanners: queue.Queue[Any] = queue.Queue()
        for _ in range(SCANNERS):
            self._scanners.put(Consumer(client_config(settings, **group, **READER_CONFIG)))
        self._scanners_open = SCANNERS
        self._closing = threading.Lock()
        self._cached: dict[int, tuple[int, int]] = {}
        self._attempted = -math.inf  # when the last read of the offsets began
        self._reading = threading.Lock()  # held by the one read of the offsets under way
        self._closed = False
        self._offsets()  # the first read begins

    def _offsets(self) -> dict[int, tuple[int, int]]:
        """Per partition of the events topic: (end offset, the process group's committed
        offset), as last read. Never waits for the brokers: its callers (ingest's backpressure,
        ``/readyz``) run on the API's event loop, which a stalled broker would freeze for every
        request. Once ``LAG_CACHE_S`` passed since the last read began, a call begins another,
        in a thread of its own; until the first ends there are none (no lag), and while the
        brokers do not answer the last read stays (ingest's own writes fail then)."""
        now = time.monotonic()
        if not self._closed and now - self._attempted >= LAG_CACHE_S and self._reading.acquire(blocking=False):
            self._attempted = now
            try:
                threading.Thread(target=self._read_offsets, name="kafka-offsets", daemon=True).start()
            except RuntimeError:  # no thread to be had (the interpreter ending): a later call tries again
                self._reading.release()
        return self._cached

    def _read_offsets(self) -> None:
        from confluent_kafka import TopicPartition

        def left() -> float:
            return max(0.01, deadline - time.monotonic())

        try:
            with self._lock:
                if self._closed:
                    return
                deadline = time.monotonic() + OFFSETS_TIMEOUT_S
                tps = [TopicPartition(self.topics.events, p) for p in range(self.topics.partitions)]
                committed = {tp.partition: max(tp.offset, 0) for tp in self._consumer.committed(tps, left())}
                offsets = {}
                for p in range(self.topics.partitions):
                    _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topics.events, p), left())
                    offsets[p] = (high, committed.get(p, 0))
            self._cached = offsets
        except Exception as exc:
            log.warning("cannot read the events topic's offsets (the lag shown is older): %s", exc)
        finally:
            self._reading.release()

    def head(self) -> int:
        return sum(high for high, _ in self._offsets().values())

    def processed(self) -> int:
        return sum(done for _, done in self._offsets().values())

    def lag_by_partition(self, processed: int = 0) -> dict[int, int]:
        """Per partition; ``processed`` is unused: the process group's committed offsets say it."""
        return {p: max(0, high - done) for p, (high, done) in self._offsets().items()}

    def check(self) -> None:
        """Nothing to check here: the brokers keep the files, and ingest's writes say when they fail."""

    def totals(self) -> tuple[int, int]:
        """Events written to the topic, and those the process group committed, as last read."""
        offsets = self._offsets().values()
        return sum(high for high, _ in offsets), sum(done for _, done in offsets)

    def get(self, offset: int) -> Record | None:
        """The event at global ``offset`` (see :func:`records.global_offset`), if still kept;
        TimeoutError if the brokers do not say within :data:`RECORD_S` or so."""
        from confluent_kafka import TopicPartition

        if offset < 0:
            return None  # detections keyed by other fields than the customer cite events by id only
        partition, position = offset >> OFFSET_BITS, offset & ((1 << OFFSET_BITS) - 1)
        if not self._records_lock.acquire(timeout=RECORD_S):
            raise TimeoutError("the events topic's reader is held by other reads")
        try:
            with _readable():
                self._records.assign([TopicPartition(self.topics.events, partition, position)])
                try:
                    # the record, or at once an error: its offset removed by retention, or past the end
                    message = self._records.poll(RECORD_S)
                finally:
                    self._records.unassign()
        finally:
            self._records_lock.release()
        if message is None:
            raise TimeoutError(f"the events topic did not answer within {RECORD_S:g} s")
        if message.error() is not None or message.offset() != position:
            return None  # gone, or a transaction's marker there
        return Record(offset, partition, message.timestamp()[1] / 1000.0, message.value() or b"")

    def newest(self, limit: int) -> tuple[list[Range], int]:
        """The ranges of the newest ``limit`` offsets of the events topic, and how many of their
        oldest records to skip (:func:`.backtest.newest`)."""
        if not self._lock.acquire(timeout=SCAN_WAIT_S):  # a read of the lag the brokers hold up
            raise RequestError(503, "unavailable", "the events topic cannot be read now; try again", RETRY)
        try:
            with _readable():
                return newest(self._consumer, self.topics.events, self.topics.partitions, limit)
        finally:
            self._lock.release()

    def recent_of_customer(self, customer_id: str, limit: int, scan: int) -> tuple[list[Record], int]:
        """The customer's newest ``limit`` events among the latest offsets of their partition (at
        most ``scan`` and :data:`SCAN_RECORDS`), newest first, and the lowest global offset
        searched. Read backwards, a chunk at a time (an active customer's are in the first),
        for :data:`SCAN_S` at most: then the answer says how far back it got."""
        from confluent_kafka import TopicPartition

        partition = partition_for(customer_id.encode(), self.topics.partitions)
        key = customer_id.encode()
        found: list[tuple[Record, _Customer]] = []
        with self._scanning() as scanner:
            deadline = time.monotonic() + SCAN_S
            tp = TopicPartition(self.topics.events, partition)
            low, high = scanner.get_watermark_offsets(tp, SCAN_S)
            floor = max(low, high - min(scan, SCAN_RECORDS))
            end = high
            while end > floor and len(found) < limit:
                start = max(floor, end - SCAN_CHUNK)
                chunk = list(read_merged(scanner, self.topics.events, [(partition, start, end)], deadline))
                if time.monotonic() >= deadline:
                    break  # that chunk may be cut short: not searched
                theirs = [_record(partition, m) for m in chunk if m.key() == key]
                envelopes = ((r, _envelope_of(r.body)) for r in reversed(theirs))
                found.extend((r, e) for r, e in envelopes if e is not None and e.customer_id == customer_id)
                end = start
        return _first_copies(found)[:limit], global_offset(partition, end)

    @contextlib.contextmanager
    def _scanning(self) -> Iterator[Any]:
        """A scanner of the pool, one request each: 503 soon when all are busy (a request waiting
        for one would hold one of the API's threads, which every other request needs)."""
        try:
            scanner = self._scanners.get(timeout=SCAN_WAIT_S)
        except queue.Empty:
            raise RequestError(
                503, "unavailable", "the events topic is being searched for others; try again", RETRY
            ) from None
        try:
            with _readable():
                yield scanner
        finally:
            self._scanners.put(scanner)

    def close(self) -> None:
        # not under a read still running on a request's thread, or the lag's
        with self._lock:
            self._closed = True
            self._consumer.close()
        with self._records_lock:
            self._records.close()
        with self._closing:  # each scanner once its search, if any, is over; a second close finds none open
            while self._scanners_open:
                self._scanners.get().close()
                self._scanners_open -= 1


@contextlib.contextmanager
def _readable() -> Iterator[None]:
    """503 when the brokers fail a read of the events topic."""
    from confluent_kafka import KafkaException

    try:
        yield
    except (KafkaException, ReadFailed) as exc:
        log.warning("cannot read the events topic: %s", exc)
        raise RequestError(503, "unavailable", "the events topic cannot be read now; try again", RETRY) from exc


class KafkaPlatform:
    """The API's platform for ``serve ingest`` (``ingest=True``) and ``serve api``."""

    runtime = "kafka"

    def __init__(
        self, settings: Settings, *, ingest: bool, clock: Clock | None = None, instance: str | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.store = open_postgres(settings)
        self.keys = ApiKeys(self.store)
        self.alerts = self.triage = self.records = self.store
        self.silences = SqlSilenceStore(self.store)
        self.notifications = SqlNotificationLog(self.store)
        self.quarantine = QuarantineRepository(self.store)
        self.packs = PackRepository(self.store)
        self.fx = followed_rates(self.store, settings, self.clock.time())  # followed by _refresh
        self.fx.expose(self.metrics, self.clock.time)
        pack = self.packs.startup_pack(settings.rule_pack, self.clock.time())
        self.engine = Engine(pack, settings.allowed_lateness_s)  # holds no state: the pack and lists
        for name, values in self.packs.lists().items():
            if name in pack.lists:
                self.engine.set_list(name, values)
        self.log = KafkaLog(settings)
        self.stream = AlertStream()
        self.plan = plan_stages(pack)
        # its transactional id: stable for a server (a restarted one fences its previous self)
        instance = instance or f"{socket.gethostname()}-{settings.port}"
        self.appender = KafkaAppender(settings, lambda: self.plan, instance, self.metrics) if ingest else None
        self.ingest: IngestService | None = None
        if self.appender is not None:
            self.ingest = IngestService(
                self.appender,
                self.metrics,
                self.clock,
                max_batch_events=settings.max_batch_events,
                max_lag_events=settings.max_lag_events,
                lag=self.lag,
                custom_types=lambda: self.engine.pack.custom_types,
                fx=lambda: self.fx.table,
            )
        self.counters = CountersPublisher(self.store, self.metrics)
        self.feed = FeedFollower(self.store, self.stream)  # changes dispatch took in, shown live
        self._features: FeatureClient | None = None  # made when first asked
        self._features_lock = threading.Lock()
        self._features_failed_at = -math.inf
        self._started = False
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """Started, not stopping, and (serving ingest) its writer thread not ended by a bug."""
        return self._started and (self.appender is None or self.appender.alive)

    def changes_refused(self) -> None:
        return None  # the store is PostgreSQL's server, which keeps its own disk

    def budget(self, kind: str, rate: float, burst: float) -> Buckets:
        return StoredBuckets(self.store, kind, rate, burst, self.clock)  # one for every api process

    def unready_reason(self) -> str | None:
        if self.appender is None:
            return None
        if not self.appender.alive:
            return "ingest's writer thread ended on an error (logged): restart this process"
        return self.appender.trouble()  # the brokers away or refusing

    @property
    def accepting(self) -> bool:
        return self.ready

    @property
    def pack(self) -> RulePack:
        return self.engine.pack

    def redrive_quarantined(self, entry_id: int, actor: str) -> QuarantineEntry:
        """Claim a quarantined record (audited), write it back to its topic, mark it redriven."""
        from ringfence.errors import OverloadedError
        from ringfence.runtimes.kafka.quarantine import reproduce

        entry = self.quarantine.request_redrive(entry_id, actor, self.clock.time())
        try:
            reproduce(self.settings, entry)
        except Exception as exc:
            self.quarantine.release(entry_id)
            raise OverloadedError(f"the event log did not take the event back: {exc}", 1) from exc
        return self.quarantine.finish_redrive(entry_id, self.clock.time())

    def notification_redriven(self) -> None:
        """Nothing to wake: the dispatch services poll the store."""

    def processed_offset(self) -> int:
        return self.log.processed()

    def customer_features(self, customer_id: str) -> tuple[float, dict[str, Any]]:
        """Asked of the process worker holding the customer (:mod:`.queries`), within seconds."""
        return self._feature_client().ask(customer_id)

    def _feature_client(self) -> FeatureClient:
        """The client that asks the workers, made when first needed; after a failure to make
        it, 503 for a second before the next attempt (not a new client per request)."""
        if not self._features_lock.acquire(timeout=FEATURE_TIMEOUT_S):
            raise RequestError(503, "unavailable", "the api service is connecting to the workers; try again", RETRY)
        try:
            if self._features is None:
                if time.monotonic() - self._features_failed_at < 1.0:
                    raise RequestError(503, "unavailable", "cannot ask the workers now; try again", RETRY)
                try:
                    self._features = FeatureClient(self.settings)
                except RequestError:
                    self._features_failed_at = time.monotonic()
                    raise
            return self._features
        finally:
            self._features_lock.release()

    async def backtest(self, candidate: RulePack, limit: int, actor: str, on_exit: Callable[[], None]) -> BacktestChild:
        """In a child process reading the newest ``limit`` records of the events topic
        (:mod:`.backtest`), bounded as the embedded runtime's (:mod:`ringfence.runtimes.backtest`)."""
        await asyncio.to_thread(self.packs.record_backtest, candidate, limit, actor, self.clock.time())
        edited = await asyncio.to_thread(self.packs.lists)  # lists edited at run time: theirs win in both packs
        ranges, skip = await asyncio.to_thread(self.log.newest, limit)
        config = {name: str(value) for name, value in client_config(self.settings).items()}
        topics = self.log.topics
        source = KafkaSource(
            config | {"group.id": topics.group("backtest")},
            topics.events,
            ranges,
            OFFSET_BITS,
            skip,
            self.settings.kafka_dedup_window_s,
        )
        job = BacktestJob(
            journal="",
            after=0,
            limit=limit,
            live=self.pack.text,
            candidate=candidate.text,
            lists={name: sorted(values) for name, values in edited.items()},
            budget_s=self.settings.backtest_time_budget_s,
            kafka=source,
        )
        return await start_child(job, "ringfence.runtimes.kafka.backtest", on_exit=on_exit)

    def active_pack(self) -> PackVersion | None:
        return self.packs.active()

    def check_pack(self, pack: RulePack) -> None:
        check_runnable(pack, self.settings.engine)  # the workers' setting too, as a deployment's is one
        plan_stages(pack)  # each definition reads its own key's features only
        refuse_shared_stage_names(pack)

    def dropped_state(self, pack: RulePack) -> list[str]:
        return self.engine.dropped_state_names(pack)

    def activate_pack(self, pack: RulePack, actor: str, now: float) -> PackVersion:
        """Store it; the process workers follow the store, and so does this service's copy."""
        plan, engine = plan_stages(pack), self.engine.reloaded(pack)  # a pack they refuse is not stored
        version = self.packs.activate(pack, actor, now)
        self.plan, self.engine = plan, engine
        for name, values in self.packs.lists().items():  # edits stand, as after a restart
            if name in pack.lists:
                self.engine.set_list(name, values)
        return version

    def list_values(self, name: str) -> frozenset[str]:
        return self.engine.lists.get(name, frozenset())

    def put_list(self, name: str, values: list[str], actor: str, now: float) -> ListValues:
        saved = self.packs.put_list(name, values, actor, now, self.pack.lists[name])
        self.engine.set_list(name, frozenset(saved.values))
        return saved

    def fx_table(self) -> FxTable:
        return self.fx.table

    def load_fx(self, rates: list[FxRate], actor: str, now: float) -> FxTable:
        return self.fx.load(rates, actor, now)

    def lag(self) -> int:
        return sum(self.log.lag_by_partition().values())

    def shared_totals(self) -> dict[str, float]:
        """What its services did, where they all write: the events topic's offsets (written by
        ingest, committed by the workers) and the store (alerts, quarantined events). This
        process's own counters see only its own work: ``serve api`` processes nothing."""
        ingested, processed = self.log.totals()
        return {
            "ingested": float(ingested),
            "processed": float(processed),
            "alerts": float(self.store.count_alerts()),
            "quarantined": float(sum(self.quarantine.counts().values())),
            "notifications_sent": float(self.notifications.count_by_status().get("sent", 0)),
            **shared_totals(self.store),  # what only one service's processes count
        }

    def start(self) -> None:
        self._started = True
        self.counters.start()
        self.feed.start()
        self._refresher = threading.Thread(target=self._refresh, name="pack-refresh", daemon=True)
        self._refresher.start()

    def _refresh(self) -> None:
        """Follow packs, lists and FX rates changed through another API instance or the CLI."""
        while not self._stop.wait(PACK_EVERY_S):
            try:
                active = self.packs.active()
                if active is not None and active.digest != self.engine.pack.digest:
                    pack = load_pack(active.text, stored=True)
                    self.plan = plan_stages(pack)
                    self.engine = self.engine.reloaded(pack)
                for name, values in self.packs.lists().items():
                    if name in self.engine.pack.lists:
                        self.engine.set_list(name, values)
            except Exception:
                log.warning("cannot refresh the rule pack from the store", exc_info=True)
            try:  # on its own: a pack that cannot load must not hold the rates back
                self.fx.refresh()
            except Exception:
                log.warning("cannot read the FX rates from the store", exc_info=True)

    def stop(self) -> None:
        self._started = False
        self._stop.set()
        if self.appender is not None:
            self.appender.close()
        self.counters.stop()
        self.feed.stop()
        self.log.close()
        with self._features_lock:
            if self._features is not None:
                self._features.close()
        self.keys.close()
        self.store.close()
