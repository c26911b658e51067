"""``ringfence serve process``: a worker of the consumer group that runs the engine's stages.

A worker owns *tasks* (:mod:`.task`): one per stage and partition of the input topics the
group assigned it (a partition of the stages topic feeds every keyed stage but the
customer's, the record naming its stage), each with its own engine holding that partition's
keys, rebuilt from its changelog before any of its records is processed (:mod:`.restore`). The worker is the
processing driver's runner (:mod:`ringfence.runtimes.processing`) over the records it
consumes: it folds each into its task (a producer's retry dropped by :mod:`.seen`, the
contributions of several stages collected by :mod:`.join`), and commits every batch (what
arrived in ``kafka_commit_interval_ms``, or ``BATCH`` records) as one
Kafka transaction (:mod:`.checkpoint`): the records it sends on, the state it changed and the
input offsets it consumed commit together or not at all. Whoever takes the partitions of a
worker that died mid-batch restores their state (exactly that of the last committed batch)
and resumes from the committed offsets, so no event is lost, none is counted twice, and the
alerts it replays carry the ids they had.

Poison: a batch that fails for anything but Kafka or the store (the decoder, the engine or the
state codec raised) commits the records before the one that failed in one transaction, runs
that record alone, then the rest as a batch again (a failure the fold cannot place, one record
per transaction). A record that fails again is
quarantined: its row is written to PostgreSQL (:mod:`ringfence.store.quarantine`), keyed by
(topic, partition, offset) so writing it twice keeps one row, and only then does a
transaction of its own move the committed offset past it; its task's state is restored from
its changelog, which never saw the record (a task whose fold failed is *tainted*: it writes
no snapshot part until it is restored). A worker killed between the two replays the record,
quarantines it again into the same row, and moves on: nothing is lost or counted twice in
the table. A stage's record holds many events (:mod:`.ingest`): run alone, it is taken event
by event, and the event that fails is set aside and the record run again without it
(:class:`~ringfence.runtimes.processing.PartSetAside`), so that event alone is quarantined,
named ``offset << 16 | its place``; so is an event whose rules fail in the join, with its
contributions. (A quarantine topic read by the dispatcher would put the row inside the
Kafka transaction; the idempotent key gives the same result without a new topic and
consumer.) A record no Ringfence service wrote (it does not decode) is skipped and counted
as rejected: no retry can make it valid.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ringfence.clock import Clock, SystemClock
from ringfence.config import Settings
from ringfence.engine.pack import RulePack, load_pack
from ringfence.engine.stages import CUSTOMER, JOIN, StagePlan, plan_stages
from ringfence.errors import RingfenceError
from ringfence.events.model import decode_event
from ringfence.metrics import Metrics
from ringfence.runtimes.kafka import records
from ringfence.runtimes.kafka.changelog import Entry, encode_entry
from ringfence.runtimes.kafka.checkpoint import Output, Transactions, abortable, is_kafka
from ringfence.runtimes.kafka.client_stats import counted
from ringfence.runtimes.kafka.quarantine import named_by_contribution
from ringfence.runtimes.kafka.queries import QueryServer
from ringfence.runtimes.kafka.records import AlertRecord
from ringfence.runtimes.kafka.restore import restore_tasks, trim_point
from ringfence.runtimes.kafka.seen import event_key
from ringfence.runtimes.kafka.task import JoinFailed, Source, Task, TaskId, stage_items
from ringfence.runtimes.kafka.topics import (
    MAX_RECORD_BYTES,
    TRANSACTIONAL_RETRIES,
    Topics,
    client_config,
    gather,
    take,
    topics_of,
)
from ringfence.runtimes.processing import Batch, Driver, PartSetAside, log_quarantined
from ringfence.store.packs import PackRepository
from ringfence.store.quarantine import QuarantinedEvent, QuarantineRepository, is_store_failure

log = logging.getLogger("ringfence.kafka.process")

BATCH = 2000
# records committed together, at most (a stage record holds many events): a take of BATCH
# records, mostly events, is about 1 MB and commits once; a take of large stage records is cut
# here (fewer commits, takes of 8,000, did not measurably lower the broker's CPU: docs/deploy.md);
# a batch whose changelog entry would outgrow a record is committed a record at a time
SLICE_BYTES = 4 << 20
POLL_S = 0.1
PACK_EVERY_S = 5.0
TRANSACTION_TIMEOUT_MS = 10_000  # a dead worker's open transaction blocks its partitions this long
# a changelog entry, at most (its record's framing fits in the rest): the producer refuses a
# larger record, and a refusal from Kafka is the log's failure, never the batch's, so the worker
# would stop on it, or retry the same batch for ever
MAX_ENTRY_BYTES = MAX_RECORD_BYTES - (64 << 10)


class EntryTooLarge(ValueError):
    """A batch changed more state than one changelog entry holds: the batch's fault, not the
    log's, so the driver runs it again record by record, each with an entry of its own."""

    def __init__(self, stage: str, size: int) -> None:
        super().__init__(f"the {stage} stage's changelog entry would take {size:,} bytes, over {MAX_ENTRY_BYTES:,}")


class StagesChanged(RingfenceError):
    """The pack activated in the store runs other stages than this worker: it ends, to be
    started again on that pack (its tasks, and the tasks of the stages topic's records, differ)."""


class ProcessWorker:
    """Consumes every stage's input topic in one group; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        pack: RulePack,
        *,
        worker_id: str,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        packs: PackRepository | None = None,
    ) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.topics: Topics = topics_of(settings)
        self.plan: StagePlan = plan_stages(pack)
        self.metrics = metrics or Metrics()
        self.clock = clock or SystemClock()
        self.packs = packs  # where activated packs and edited lists come from (polled)
        self._lists: dict[str, frozenset[str]] = packs.lists() if packs is not None else {}
        self._last_pack_check = self.clock.time()
        # by changelog partition, the first entry of a stage this worker does not run but the
        # store's pack may (a restore found it): no trim passes it
        self._pinned: dict[int, int] = {}
        self.worker_id = worker_id
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": self.topics.group("process"),
                    "client.id": f"ringfence-process-{worker_id}",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 1000,
                    "partition.assignment.strategy": "range",
                    **counted(self.metrics, "process.consumer"),
                },
            )
        )
        self.producer = Producer(
            client_config(
                settings,
                **{
                    "transactional.id": f"{self.topics.prefix}-process-{worker_id}",
                    "client.id": f"ringfence-process-{worker_id}",
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    # what workers write (join values, changelog rows, alerts) is repetitive msgpack:
                    # lz4 takes it from about 1,370 bytes an event to 320, for the brokers' disks,
                    # network and replicas, at no measurable CPU to the worker (docs/deploy.md, Sizing)
                    "compression.type": "lz4",
                    "message.max.bytes": MAX_RECORD_BYTES,  # a changelog entry (the topics take a batch's framing too)
                    "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                    **TRANSACTIONAL_RETRIES,
                    "partitioner": "murmur2_random",  # the Java clients' partitioner, so any producer agrees
                    **counted(self.metrics, "process.producer"),
                },
            )
        )
        self.transactions = Transactions(self.producer, self.consumer)
        self.tasks: dict[TaskId, Task] = {}
        self.pending: set[TaskId] = set()  # assigned, not restored yet
        self._moved: set[Source] = set()  # revoked during a take or a gather (topics.take)
        self.quarantine = QuarantineRepository(packs.store) if packs is not None else None
        # a failed batch: the records before the one that failed commit together (its fold says
        # which), that one alone, then the rest; a Kafka transaction a record took seconds a poison
        self.driver: Driver[Any] = Driver(self, commit_each=True, in_order=True)
        self._committed: dict[Source, int] = {}  # offsets this worker committed, per input partition
        self._in_hand: dict[Source, int] = {}  # the offset after the last record consumed, per input partition
        self._joins: dict[int, list[records.Contribution]] = {}  # to commit, by join partition
        self._isolating = False  # a failed batch is being run record by record (see reset)
        # events of stage records that failed, quarantined when their record runs again (by
        # topic, partition, offset, place in the record)
        self._set_aside: dict[tuple[str, int, int, int | None], QuarantinedEvent] = {}
        self._admin: Any = None  # deletes what snapshots made redundant in the changelogs (made when first needed)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; a fenced or failed producer ends the worker (exit)."""
        self.producer.init_transactions(60)
        inputs = sorted({self.topics.stage_input(name) for name in self.plan.names} | {self.topics.join})
        self.consumer.subscribe(inputs, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked)
        log.info("worker %s consuming %s", self.worker_id, ", ".join(inputs))
        with contextlib.ExitStack() as closing:
            closing.callback(self.consumer.close)
            queries = QueryServer(self.settings, self.worker_id)
            closing.callback(queries.close)
            # a commit at most this often (as Kafka Streams' commit.interval.ms under exactly-once):
            # a take of whatever had arrived made a transaction of a few records at a paced load,
            # and the brokers' CPU follows transactions (docs/deploy.md, "The broker's CPU...")
            interval = self.settings.kafka_commit_interval_ms / 1000
            cycled = time.monotonic()
            while not stop.is_set():
                taken = take(self.consumer, BATCH, POLL_S, self._moved)
                messages = gather(self.consumer, taken, BATCH, cycled + interval, self._moved)
                cycled = time.monotonic()
                self._follow_store()
                if self.pending:
                    self._restore(self.pending)
                self._cycle(messages)
                self._answer(queries)

    def _answer(self, queries: QueryServer) -> None:
        """Answer the api service's queries for the features of customers this worker holds."""
        try:
            queries.follow(frozenset(p for stage, p in self.tasks if stage == CUSTOMER))
            queries.answer(self._features)
        except Exception as exc:  # a query must never stop processing
            queries.warn(f"could not answer: {type(exc).__name__}: {exc}")

    def _features(self, partition: int, customer_id: str) -> tuple[float, dict[str, Any]] | None:
        task = self.tasks.get((CUSTOMER, partition))
        if task is None or task.tainted:
            return None  # moving, or to be restored: the asker tries again
        latest = max(task.engine.max_event_time.values(), default=-math.inf)
        at = latest if math.isfinite(latest) else self.clock.time()
        return at, task.engine.features_of({"customer_id": customer_id}, at)

    def _assigned(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self.pending.update(self.topics.tasks_of(tp.topic, tp.partition, self.plan))

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._moved |= gone  # a gather under way drops theirs
        for topic, partition in gone:
            for task_id in self.topics.tasks_of(topic, partition, self.plan):
                self.tasks.pop(task_id, None)
                self.pending.discard(task_id)
            self._committed.pop((topic, partition), None)
        self._set_aside = {k: v for k, v in self._set_aside.items() if k[:2] not in gone}

    def _cycle(self, messages: list[Any]) -> None:
        held = []
        owned = self._sources()
        for message in messages:
            if message.error() is not None:
                log.warning("consumer error: %s", message.error())
            elif _source(message) in owned:  # else revoked in this poll
                held.append(message)
        taken = {self._task_of(m) for m in held}
        if any(stage == "" for stage, _ in taken):
            # a stage this worker does not run: ingest may have taken up a pack that runs it
            # before this worker did (it ends then); else the records are rejected in the fold
            self._follow_store(at_once=True)
        self._in_hand = {_source(m): m.offset() + 1 for m in held}
        self._count("read", (m.topic() for m in held))
        now = self.clock.time()
        for task_id in taken:  # records in hand: not quiet, whichever slice they are in
            if (task := self.tasks.get(task_id)) is not None:
                task.event_time.took(now)
        for records_slice in _slices(held):  # a commit's records, and its changelog entries, stay small
            self._isolating = False
            try:
                self.driver.cycle(records_slice, list(self.tasks.values()), self.clock.time())
            except Exception as error:
                if not abortable(error) or is_store_failure(error):
                    raise
                log.warning("batch failed (%s): rewinding to the last committed batch", type(error).__name__)
                self._rewind()
                return
        self.metrics.engine_state_keys.set(sum(t.engine.state_size() for t in self.tasks.values()))

    # -- the driver's runner ----------------------------------------------------------------------

    def fold(self, messages: Sequence[Any], batch: Batch[Any]) -> None:
        now = self.clock.time()
        joins: dict[int, list[records.Contribution]] = {}  # what the batch sends to each join partition
        for message in messages:
            task = self.tasks.get(self._task_of(message))
            if task is None:  # a record of the stages topic naming none of the pack's stages
                batch.rejected += 1
                where = (*_source(message), message.offset())
                log.error("skipped record %s[%d]@%d: it names no stage of the pack", *where)
                batch.records.append(message)
                continue
            task.event_time.took(now)
            try:
                # records run again to find what failed are taken event by event: the state codec too
                self._fold_one(task, message, batch, joins, event_by_event=self._isolating)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # not written by Ringfence's ingest or workers: no retry can make it valid
                batch.rejected += 1
                log.error("skipped undecodable record %s[%d]@%d: %s", *_source(message), message.offset(), exc)
                batch.records.append(message)  # moved past, not processed
                continue
            except Exception:
                task.tainted = True  # its engine holds what the failure left, until it is restored
                raise
            batch.records.append(message)
        for task in self.tasks.values():
            try:
                task.take_changes()
            except Exception:
                task.tainted = True
                raise
        for partition, parts in joins.items():  # a fold that failed sends nothing
            self._joins.setdefault(partition, []).extend(parts)

    def _fold_one(
        self,
        task: Task,
        message: Any,
        batch: Batch[Any],
        joins: dict[int, list[records.Contribution]],
        *,
        event_by_event: bool,
    ) -> None:
        if task.is_join:
            for place, part in enumerate(records.decode_contributions(message.value())):
                try:
                    task.join(self.plan, part, batch)
                except JoinFailed as failed:  # that event alone: the record holds others' too
                    batch.quarantined.append(self._poisoned_join(message, place, failed))
            return
        at = (message.offset(), message.timestamp()[1] / 1000.0)
        for index, item in stage_items(message):
            where = (message.topic(), message.partition(), message.offset(), index)
            if (aside := self._set_aside.get(where)) is not None:
                batch.quarantined.append(aside)  # it failed before: quarantined, not run again
                continue
            try:
                self._fold_event(task, item, at, batch, joins)
                if event_by_event:  # the state codec's failure is then this event's (and record's)
                    task.take_changes()
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if index is None:
                    raise  # the record is skipped
                batch.rejected += 1
                log.error("skipped undecodable event %d of record %s[%d]@%d: %s", index, *where[:3], exc)
            except Exception as error:
                if index is None or self.transient(error):
                    raise  # the driver quarantines a record of one event, and retries the store or log
                self._set_aside[where] = log_quarantined(self._poisoned_item(task, message, index, item, error))
                raise PartSetAside(f"event {index} of {where[0]}[{where[1]}]@{where[2]} failed") from error

    def _fold_event(
        self,
        task: Task,
        item: records.StageItem,
        at: tuple[int, float],
        batch: Batch[Any],
        joins: dict[int, list[records.Contribution]],
    ) -> None:
        event = decode_event(item.body)
        if not task.seen.add(event_key(event.source, event.event_id), at[1]):
            if task.stage.name == CUSTOMER:  # a producer's retry: already in this stage's state
                batch.duplicates += 1
            return
        sent = task.fold(self.plan, event, item.body, item.joined, at, batch)
        if task.stage.name == CUSTOMER:  # an event counts once: not its stages' copies, nor the join's records
            batch.processed += 1
        if sent is not None:
            key, part = sent
            joins.setdefault(records.partition_for(key, self.topics.partitions), []).append(part)

    def _poisoned_item(
        self, task: Task, message: Any, index: int, item: records.StageItem, error: Exception
    ) -> QuarantinedEvent:
        """The quarantine entry of one event of a stage's record: the event as a record of its
        own (a re-drive writes it back)."""
        headers = [(records.JOIN_HEADER, ",".join(item.joined).encode())] if item.joined else []
        if task.stage.name != CUSTOMER:  # the stages topic: its re-drive names its stage
            headers.append((records.STAGE_HEADER, task.stage.name.encode()))
        return self._entry(message, item.body, index, error, task.stage.name, headers=headers or None)

    def _poisoned_join(self, message: Any, index: int, failed: JoinFailed) -> QuarantinedEvent:
        """The quarantine entry of an event whose rules failed in the join: its contributions, as
        a join record of their own (a re-drive writes them back)."""
        entry = self._entry(message, records.encode(failed.parts), index, failed.error, JOIN)
        return log_quarantined(named_by_contribution(entry))

    def _entry(
        self,
        message: Any,
        body: bytes,
        place: int | None,
        error: Exception,
        stage: str,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> QuarantinedEvent:
        """A quarantine entry of ``message`` (``place``: of its event in it, None: all of it).
        On a topic whose records may hold several events, an entry is named ``offset << 16 |
        place``, so two events of one record never share a row (and a whole record is place 0)."""
        many = self.topics.kind(message.topic()) in ("stage", "join")
        offset = message.offset() << records.ITEM_BITS | (place or 0) if many else message.offset()
        return QuarantinedEvent.of(
            body,
            offset,
            message.partition(),
            message.timestamp()[1] / 1000.0,
            error,
            self.plan.pack.version,
            origin=message.topic(),
            stage=stage,
            record_key=key,
            record_headers=msgspec.msgpack.encode(headers) if headers else None,
        )

    def commit(self, batch: Batch[Any]) -> None:
        joins, self._joins = self._joins, {}
        entries: list[tuple[TaskId, Task, Entry]] = []
        try:
            outputs = [
                Output(self.topics.join, None, value, partition)
                for partition, parts in joins.items()
                for value in records.encode_in_records(parts, _contribution_size)
            ]
            if batch.quarantined and self.quarantine is not None:
                self.quarantine.record(batch.quarantined, self.clock.time())  # before the offset moves past it
            outputs += self._alert_records(batch)
            for task_id, task in self.tasks.items():
                if (entry := task.entry()) is not None:
                    entries.append((task_id, task, entry))
                    value = encode_entry(entry)
                    if len(value) > MAX_ENTRY_BYTES:
                        raise EntryTooLarge(task.stage.name, len(value))
                    outputs.append(Output(self.topics.changelog, None, value, task.partition, task.log.delivered))
            done = {_source(m): m.offset() + 1 for m in batch.records}
            offsets = self.transactions.offsets_past(self._sources(), done, self._in_hand, self._committed)
            self.transactions.commit(outputs, offsets or self._fencing(entries))
        except Exception:
            for task in self.tasks.values():  # what the batch changed goes with it; so does a snapshot under way
                task.log.abandon()
            for message in batch.records:  # their engines hold what is not committed, until restored
                if (held := self.tasks.get(self._task_of(message))) is not None:
                    held.tainted = True
            raise
        self._committed.update({(tp.topic, tp.partition): tp.offset for tp in offsets})
        self._count("written", (o.topic for o in outputs))
        snapshotted = set()
        for _, task, entry in entries:
            if task.log.committed(entry) is not None:  # a snapshot complete: its partition may be trimmed
                snapshotted.add(task.partition)
        self._trim({(self.topics.changelog, p): before for p in snapshotted if (before := self._trim_point(p))})
        if self._set_aside:  # those committed are done with
            self._set_aside = {k: v for k, v in self._set_aside.items() if k[2] >= self._committed.get(k[:2], -1)}
        self.metrics.events_processed.inc(batch.processed)
        # once committed: a batch run again record by record folds them again
        self.metrics.events_rejected.inc(batch.rejected)
        self.metrics.events_duplicate.inc(batch.duplicates)
        self.metrics.events_late.inc(len(batch.late))
        self.metrics.events_quarantined.inc(len(batch.quarantined))

    def _alert_records(self, batch: Batch[Any]) -> list[Output]:
        """The batch's alert signals and late events, for the dispatch service."""
        alerts = self.topics.alerts
        out = [
            Output(alerts, f"{s.rule_id}\x1f{s.dedup_key}".encode(), records.encode(AlertRecord(signal=s)))
            for s in batch.signals
        ]
        out += [
            Output(alerts, f"late\x1f{records.partition_of(e.offset)}".encode(), records.encode(AlertRecord(late=e)))
            for e in batch.late
        ]
        return out

    def _count(self, direction: str, topics: Iterable[str]) -> None:
        for kind, n in Counter(self.topics.kind(t) for t in topics).items():
            self.metrics.kafka_records.labels(direction, kind).inc(n)

    def _fencing(self, entries: list[tuple[TaskId, Task, Entry]]) -> list[Any]:
        """For a commit that moves no offset (timers fired, a snapshot part) but writes changelog
        ``entries``: a committed offset, committed again, so that the group fences it if this
        worker lost its partitions in a rebalance (one offset fences the whole transaction)."""
        from confluent_kafka import TopicPartition

        if not entries:
            return []
        sources = sorted({self.topics.source(task_id) for task_id, _, _ in entries})
        known = [(source, self._committed[source]) for source in sources if source in self._committed]
        known = known or list(self._committed.items())[:1]
        if known:
            return [TopicPartition(*known[0][0], known[0][1])]
        # nothing committed by this worker yet: the group's own committed offsets
        try:
            committed = self.consumer.committed([TopicPartition(*source) for source in sources], 10)
        except Exception:  # the coordinator busy: this one commit goes unfenced, as before the group knew it
            log.warning("could not read the group's committed offsets to fence a commit", exc_info=True)
            return []
        return [tp for tp in committed if tp.offset >= 0][:1]

    def _trim_point(self, partition: int) -> int | None:
        """The offset before which changelog ``partition`` holds nothing its tasks need, if this
        worker holds them all (else the next restore of the partition trims it)."""
        held = [self.tasks.get((name, partition)) for name in [*self.plan.names, JOIN]]
        if not all(held):
            return None
        keep = trim_point(task.log for task in held if task is not None)
        pinned = self._pinned.get(partition)
        return keep if pinned is None or keep is None else min(keep, pinned)

    def _trim(self, before: Mapping[tuple[str, int], int]) -> None:
        """Delete the changelog records a complete snapshot made redundant. Not waited for: if
        it fails, the next snapshot deletes them, or the next restore of the partition."""
        if not before:
            return
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import AdminClient

        try:
            if self._admin is None:
                self._admin = AdminClient(client_config(self.settings))
            futures = self._admin.delete_records([TopicPartition(t, p, offset) for (t, p), offset in before.items()])
        except Exception:  # after the commit: nothing of it is to undo
            log.warning("could not delete changelog records before %s (the next snapshot tries again)", before)
            return
        for tp, future in futures.items():
            future.add_done_callback(lambda f, tp=tp: _trimmed(tp, f))

    def reset(self, messages: Sequence[Any] | None) -> None:
        """Rebuild the tasks of ``messages`` (all: None) from their changelogs. The driver resets
        before it runs a failed batch record by record: until the next cycle, records are taken
        event by event (:meth:`fold`)."""
        self._isolating = True
        self._joins = {}
        known = set(self.tasks) | self.pending
        self._restore(known if messages is None else {t for m in messages if (t := self._task_of(m)) in known})

    def uncommitted(self, messages: Sequence[Any]) -> list[Any]:
        return [m for m in messages if m.offset() >= self._committed.get(_source(m), -1)]

    def poisoned(self, message: Any, error: Exception) -> QuarantinedEvent:
        stage = self._task_of(message)[0]
        headers = [(k, v) for k, v in message.headers() or ()]
        entry = self._entry(message, message.value() or b"", None, error, stage, key=message.key(), headers=headers)
        # a stage's contribution, not an event: name the event it is for
        return named_by_contribution(entry) if stage == JOIN else entry

    def transient(self, error: Exception) -> bool:
        return is_kafka(error) or is_store_failure(error)

    def _task_of(self, message: Any) -> TaskId:
        """The task ``message`` is for (stage or join, partition); a record of the stages topic
        names its stage (one naming a stage whose input is another topic names none: ``""``)."""
        topic, partition = _source(message)
        if topic == self.topics.join:
            return (JOIN, partition)
        if topic == self.topics.events:
            return (CUSTOMER, partition)
        stage = (records.header(message, records.STAGE_HEADER) or b"").decode(errors="replace")
        return (stage if stage in self.plan.names and stage != CUSTOMER else "", partition)

    def _sources(self) -> set[Source]:
        """The input partitions of the tasks this worker holds."""
        return {self.topics.source(task_id) for task_id in self.tasks}

    # -- restoring ----------------------------------------------------------------------------------

    def _restore(self, ids: Iterable[TaskId]) -> None:
        """Drop the in-memory state of tasks ``ids`` and rebuild it from their changelogs."""
        started = time.monotonic()
        ids = set(ids)
        for task_id in ids:
            self.tasks.pop(task_id, None)
        try:
            tasks, rows, trims, pinned = restore_tasks(
                self.settings,
                self.topics,
                self.plan,
                ids,
                self._lists,
                self.clock.time(),
                others_kept=not self._runs_the_stores_pack(),
            )
        except Exception:
            self.pending |= ids  # not lost: restored before any of their records is taken
            raise
        self.tasks.update(tasks)
        for partition in {p for _, p in ids}:  # the restore read all of each partition
            if partition in pinned:
                self._pinned[partition] = pinned[partition]
            else:
                self._pinned.pop(partition, None)
        self._trim(trims)
        self.pending -= ids
        seconds = time.monotonic() - started
        self.metrics.state_restore.observe(seconds)
        log.info(
            "worker %s restored %d partitions (%d changelog rows) in %.2f s", self.worker_id, len(tasks), rows, seconds
        )

    def _rewind(self) -> None:
        """After a failed batch every engine may be ahead of its changelog: restore all tasks
        and consume again from the committed offsets."""
        ids = set(self.tasks) | self.pending
        self._committed.clear()
        self._joins = {}
        self.transactions.seek_committed({self.topics.source(task_id) for task_id in ids})
        self._restore(ids)

    # -- the rule pack ------------------------------------------------------------------------------

    def _follow_store(self, *, at_once: bool = False) -> None:
        """Between batches: take up a pack activated, or a list edited, through the API; end the
        worker (:class:`StagesChanged`) if the pack runs other stages. ``at_once``: whenever
        it last looked, and a store that cannot be read raises (the worker cannot tell)."""
        now = self.clock.time()
        if self.packs is None or (not at_once and now - self._last_pack_check < PACK_EVERY_S):
            return
        self._last_pack_check = now
        try:
            active = self.packs.active()
            self._lists = self.packs.lists()
        except Exception as error:
            if at_once or not _store_unreadable(error):
                raise
            log.warning("cannot read the rule pack from the store; keeping the running one", exc_info=True)
            return
        if active is not None and active.digest != self.plan.pack.digest:
            self.reload(load_pack(active.text, stored=True))
            log.info("worker %s runs rule pack %s", self.worker_id, active.version)
        for task in self.tasks.values():
            for name, values in self._lists.items():  # through set_list: the compiled core holds its own copy
                if name in task.stage.pack.lists:
                    task.engine.set_list(name, values)

    def _runs_the_stores_pack(self) -> bool:
        """Whether this worker runs the pack activated in the store (False if it cannot tell). If
        not, another worker may run stages this one does not: a restore keeps their entries."""
        if self.packs is None:
            return True
        try:
            active = self.packs.active()
        except Exception as error:
            if not _store_unreadable(error):
                raise
            return False
        return active is None or active.digest == self.plan.pack.digest

    def reload(self, pack: RulePack) -> None:
        """Run ``pack`` from the next batch, keeping the state of unchanged definitions. A pack
        that runs other stages ends the worker (:class:`StagesChanged`): started again, it runs
        that pack's tasks (the topics are the same: no ``kafka init``)."""
        plan = plan_stages(pack)
        if plan.names != self.plan.names:
            raise StagesChanged(
                f"rule pack {pack.version} runs the stages {', '.join(plan.names)} and this worker "
                f"{', '.join(self.plan.names)}: it ends, to be started again on that pack"
            )
        self.plan = plan
        self._set_aside = {}  # the new pack may run them
        for task in self.tasks.values():
            task.stage = plan.rules if task.stage.name == JOIN else plan.stage(task.stage.name)
            task.engine = task.engine.reloaded(task.stage.pack)
            # a snapshot under way walked the old engine: the next one walks the new one (rows of
            # changed definitions are no longer read, and the next complete snapshot drops them)
            task.log.abandon()


def _store_unreadable(error: Exception) -> bool:
    """A failure to read the store (its own error, or the database's), not a bug."""
    return isinstance(error, RingfenceError) or is_store_failure(error)


def _source(message: Any) -> Source:
    return (message.topic(), message.partition())


def _trimmed(tp: Any, future: Any) -> None:
    if (error := future.exception()) is not None:
        log.warning(
            "could not delete %s[%d] before %d (the next snapshot tries again): %s",
            tp.topic,
            tp.partition,
            tp.offset,
            error,
        )


def _contribution_size(part: records.Contribution) -> int:
    return len(part.body) + len(part.event_key) + 48 * (len(part.values) + len(part.expected)) + 32


def _slices(messages: list[Any]) -> list[list[Any]]:
    """``messages`` in runs of about ``SLICE_BYTES`` (one run, maybe empty, if they are fewer)."""
    out: list[list[Any]] = [[]]
    size = 0
    for message in messages:
        value = len(message.value() or b"")
        if out[-1] and size + value > SLICE_BYTES:
            out.append([])
            size = 0
        out[-1].append(message)
        size += value
    return out
