"""``ringfence serve process``: a worker of the consumer group that runs the engine's stages.

A worker owns *tasks*: one per partition of a stage's input topic the group assigned it,
each with its own engine holding that partition's keys. Every batch is one Kafka
transaction: the records it sends on (to the next stage's topic, to the alerts topic), the
state it changed (to the stage's changelog, same partition) and the input offsets it
consumed commit together or not at all. A worker that dies mid-batch leaves nothing
visible to ``read_committed`` readers; whoever takes its partitions restores their state
from the changelogs (exactly the state of the last committed batch) and resumes from the
committed offsets, so no event is lost, none is counted twice, and the alerts it replays
carry the ids they had.

Poison: a batch that fails for anything but Kafka (the decoder, the engine or the state codec
raised) is aborted and run again one record per transaction. A record that fails again is
quarantined: its row is written to PostgreSQL (:mod:`ringfence.store.quarantine`), keyed by
(topic, partition, offset) so writing it twice keeps one row, and only then does a transaction
of its own move the committed offset past it; the task's state is restored from its changelog,
which never saw the record. A worker killed between the two replays the record, quarantines
it again into the same row, and moves on: nothing is lost or counted twice in the table. (A
quarantine topic read by the dispatcher would put the row inside the Kafka transaction; the
idempotent key gives the same result without a new topic and consumer.)
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringfence.clock import Clock, SystemClock
from ringfence.config import Settings
from ringfence.engine.engine import Engine, EventContext
from ringfence.engine.pack import RulePack, load_pack
from ringfence.engine.rules import AlertSignal
from ringfence.engine.stages import CUSTOMER, JOIN, Stage, StagePlan, plan_stages, run_stage
from ringfence.errors import RingfenceError
from ringfence.events.model import Event, decode_event
from ringfence.metrics import Metrics
from ringfence.runtimes.kafka import records
from ringfence.runtimes.kafka.quarantine import named_by_contribution
from ringfence.runtimes.kafka.records import AlertRecord
from ringfence.runtimes.kafka.topics import Topics, client_config, topics_of
from ringfence.store.base import LateEvent
from ringfence.store.packs import PackRepository
from ringfence.store.quarantine import QuarantinedEvent, QuarantineRepository, is_store_failure

log = logging.getLogger("ringfence.kafka.process")

BATCH = 2000
POLL_S = 0.1
IDLE_EVERY_S = 1.0
EXPIRE_EVERY_S = 60.0
PACK_EVERY_S = 5.0
TRANSACTION_TIMEOUT_MS = 10_000  # a dead worker's open transaction blocks its partitions this long
WATERMARK = "@watermark"  # changelog names of the task's own state
SEEN = "@seen"
PENDING = "@pending"
JOIN_HORIZON_S = 3600.0  # event time a join waits for an event's last stage before giving up
TaskId = tuple[str, int]  # (input topic, partition)


@dataclass
class Task:
    """One partition of one stage: its engine, and (customer stage) the event ids it has seen."""

    stage: Stage
    partition: int
    engine: Engine
    seen: dict[str, float] = field(default_factory=dict)  # event ids (with source), to drop retries
    seen_new: list[tuple[str, float]] = field(default_factory=list)  # ... added by this batch
    # the changelog keeps seen ids a record per batch, named by the batch's last input offset
    seen_batches: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    seen_dropped: list[str] = field(default_factory=list)
    last_offset: int = -1
    pending: dict[str, dict[str, records.Contribution]] = field(default_factory=dict)  # join tasks
    pending_changes: dict[str, dict[str, records.Contribution] | None] = field(default_factory=dict)
    pending_written: set[str] = field(default_factory=set)  # pending joins the changelog holds
    clock_written: tuple[float | None, float] = (None, 0.0)
    last_record_at: float = 0.0
    last_ingested_at: float = 0.0


@dataclass
class RestoreReport:
    tasks: int
    rows: int
    seconds: float


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
                    "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                    "partitioner": "murmur2_random",  # the Java clients' partitioner, so any producer agrees
                },
            )
        )
        self.tasks: dict[TaskId, Task] = {}
        self._committed: dict[TaskId, int] = {}  # offsets this worker committed, per task
        self.pending: set[TaskId] = set()
        self._last_idle = 0.0
        self._last_expire = self.clock.time()
        self.quarantine = QuarantineRepository(packs.store) if packs is not None else None
        self._isolate_until: dict[TaskId, int] = {}  # a failed batch's last offsets: run record by record

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; a fenced or failed producer ends the worker (exit)."""
        self.producer.init_transactions(60)
        inputs = sorted({self.topics.stage_input(name) for name in self.plan.names} | {self.topics.join})
        self.consumer.subscribe(inputs, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked)
        log.info("worker %s consuming %s", self.worker_id, ", ".join(inputs))
        try:
            while not stop.is_set():
                messages = self.consumer.consume(BATCH, POLL_S)
                self._follow_store()
                self._restore_pending()
                self._run_batch(messages)
        finally:
            self.consumer.close()

    def _assigned(self, _consumer: Any, partitions: list[Any]) -> None:
        self.pending |= {(tp.topic, tp.partition) for tp in partitions}

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self.tasks.pop((tp.topic, tp.partition), None)
            self.pending.discard((tp.topic, tp.partition))
            self._committed.pop((tp.topic, tp.partition), None)

    def _run_batch(self, messages: list[Any]) -> None:
        from confluent_kafka import KafkaException

        if self._isolate_until:
            self._run_isolated(messages)
            return
        now = self.clock.time()
        idle_due = now - self._last_idle >= IDLE_EVERY_S
        if not messages and not idle_due:
            return
        self.producer.begin_transaction()
        try:
            consumed: dict[TaskId, int] = {}
            processed = 0
            for message in messages:
                if message.error() is not None:
                    log.warning("consumer error: %s", message.error())
                    continue
                task_id = (message.topic(), message.partition())
                task = self.tasks.get(task_id)
                if task is None:
                    continue  # revoked in this poll
                try:
                    self._handle(task, message, now)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    # not written by Ringfence's ingest or workers: no retry can make it valid
                    self.metrics.events_rejected.inc()
                    log.error("skipped undecodable record %s[%d]@%d: %s", *task_id, message.offset(), exc)
                consumed[task_id] = message.offset() + 1
                processed += 1
            if idle_due:
                self._last_idle = now
                self._fire_idle_timers(now)
                if now - self._last_expire >= EXPIRE_EVERY_S:
                    self._last_expire = now
                    self._expire()
            self._write_changelogs()
            offsets = self._progress(consumed)
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal() or not error.txn_requires_abort():
                raise
            log.warning("batch aborted (%s): rewinding to the last committed batch", error.str())
            self.producer.abort_transaction(30)
            self._rewind()
            return
        except Exception as error:
            if is_store_failure(error):
                raise
            log.error("batch failed (%s): running it again record by record", type(error).__name__)
            self.producer.abort_transaction(30)
            for message in messages:
                if message.error() is None:
                    task_id = (message.topic(), message.partition())
                    self._isolate_until[task_id] = max(self._isolate_until.get(task_id, -1), message.offset())
            self._rewind()
            return
        self.metrics.events_processed.inc(processed)
        self.metrics.engine_state_keys.set(sum(t.engine.state_size() for t in self.tasks.values()))

    # -- poison ------------------------------------------------------------------------------------

    def _run_isolated(self, messages: list[Any]) -> None:
        """One transaction per record, until the failed batch's records are behind: a record
        that fails is quarantined and its task restored from the changelog (module docstring)."""
        from confluent_kafka import KafkaException

        reset: set[TaskId] = set()
        try:
            for message in messages:
                if message.error() is not None:
                    continue
                task_id = (message.topic(), message.partition())
                task = self.tasks.get(task_id)
                if task is None or task_id in reset:
                    continue  # revoked, or rewound past this record: it comes again
                if not self._run_one(task, message):
                    reset.add(task_id)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal() or not error.txn_requires_abort():
                raise
            log.warning("record aborted (%s): rewinding to the last committed record", error.str())
            self.producer.abort_transaction(30)
            self._rewind()
            return
        if not messages:
            self._isolate_until.clear()  # nothing more came: the failed records are behind
        for task_id, last in list(self._isolate_until.items()):
            if self._committed.get(task_id, -1) > last or task_id not in self.tasks:
                del self._isolate_until[task_id]

    def _run_one(self, task: Task, message: Any) -> bool:
        """``message`` in a transaction of its own; False if it was quarantined."""
        task_id = (message.topic(), message.partition())
        self.producer.begin_transaction()
        try:
            try:
                self._handle(task, message, self.clock.time())
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.metrics.events_rejected.inc()
                log.error("skipped undecodable record %s[%d]@%d: %s", *task_id, message.offset(), exc)
            self._write_changelogs()  # the state codec runs here: its failure is this record's
        except Exception as error:
            if _is_kafka(error) or is_store_failure(error):
                raise
            self.producer.abort_transaction(30)
            self._quarantine(task, message, error)
            self._commit_past(task_id, message.offset())
            self._restore_task(task_id)
            return False
        self._commit_past(task_id, message.offset(), in_transaction=True)
        self.metrics.events_processed.inc()
        return True

    def _commit_past(self, task_id: TaskId, offset: int, in_transaction: bool = False) -> None:
        from confluent_kafka import TopicPartition

        if not in_transaction:
            self.producer.begin_transaction()
        tp = TopicPartition(task_id[0], task_id[1], offset + 1)
        self.producer.send_offsets_to_transaction([tp], self.consumer.consumer_group_metadata(), 30)
        self.producer.commit_transaction(30)
        self._committed[task_id] = offset + 1

    def _quarantine(self, task: Task, message: Any, error: Exception) -> None:
        """Record ``message`` as poison (idempotent: see the module docstring), before its offset moves."""
        headers = message.headers()
        entry = QuarantinedEvent.of(
            message.value() or b"",
            message.offset(),
            message.partition(),
            message.timestamp()[1] / 1000.0,
            error,
            self.plan.pack.version,
            origin=message.topic(),
            stage=task.stage.name,
            record_key=message.key(),
            record_headers=msgspec.msgpack.encode([(k, v) for k, v in headers]) if headers else None,
        )
        if task.stage.name == JOIN:  # a stage's contribution, not an event: name the event it is for
            entry = named_by_contribution(entry)
        if self.quarantine is not None:
            self.quarantine.record([entry], self.clock.time())
        self.metrics.events_quarantined.inc()
        log.error(
            "quarantined record %s[%d]@%d (event %s/%s, stage %s): %s",
            entry.origin,
            entry.partition,
            entry.offset,
            entry.source,
            entry.event_id,
            entry.stage,
            type(error).__name__,
        )

    def _restore_task(self, task_id: TaskId) -> None:
        """Drop ``task_id``'s in-memory state and rebuild it from its changelog, consuming on
        from its committed offset."""
        self.tasks.pop(task_id, None)
        self._seek_committed([task_id])
        self.pending.add(task_id)
        self._restore_pending()

    def _progress(self, consumed: dict[TaskId, int]) -> list[Any]:
        """The offsets to commit: past what was consumed and past the transaction markers after
        it (the consumer's position skips those), so a caught-up group shows no lag."""
        from confluent_kafka import TopicPartition

        positions = self.consumer.position([TopicPartition(t, p) for t, p in self.tasks])
        out = []
        for tp in positions:
            task_id = (tp.topic, tp.partition)
            following = max(consumed.get(task_id, -1), tp.offset)
            if following >= 0 and following > self._committed.get(task_id, -1):
                out.append(TopicPartition(tp.topic, tp.partition, following))
                self._committed[task_id] = following
        return out

    def _rewind(self) -> None:
        """After an aborted batch every engine is ahead of its changelog: restore all tasks and
        consume again from the committed offsets."""

        ids = list(self.tasks) + list(self.pending)
        self.tasks.clear()
        self._committed.clear()
        self.pending = set(ids)
        self._seek_committed(ids)
        self._restore_pending()

    def _seek_committed(self, ids: list[TaskId]) -> None:
        """Consume ``ids`` again from their committed offsets (from the start if none was
        committed yet: the consumer's position is past what it fetched)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        for tp in self.consumer.committed([TopicPartition(t, p) for t, p in ids], 30):
            self.consumer.seek(tp if tp.offset >= 0 else TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))

    # -- one record ------------------------------------------------------------------------------

    def _handle(self, task: Task, message: Any, now: float) -> None:
        task.last_record_at = now
        if task.stage.name == JOIN:
            self._join(task, records.decode_contribution(message.value()))
            return
        body: bytes = message.value()
        event = decode_event(body)
        seen_key = f"{event.source}\x1f{event.event_id}"
        if seen_key in task.seen:  # a producer's retry: already in this stage's state
            if task.stage.name == CUSTOMER:
                self.metrics.events_duplicate.inc()
            return
        task.seen[seen_key] = event.occurred_at
        task.seen_new.append((seen_key, event.occurred_at))
        task.last_offset = message.offset()
        ingested_at = message.timestamp()[1] / 1000.0
        task.last_ingested_at = ingested_at
        joined = _header(message, records.JOIN_HEADER)
        customer = task.stage.name == CUSTOMER
        # evidence points into the events topic; other stages' topics hold copies
        offset = records.global_offset(task.partition, message.offset()) if customer else -1
        late = event.occurred_at < task.engine.watermark(task.partition)
        if customer and late:
            self._record_late(task, event, offset, ingested_at)
        position = (offset, task.partition, ingested_at)
        final = customer and not joined
        contributes = task.stage.name in joined
        signals, values = run_stage(self.plan, task.stage, task.engine, event, position, {}, final, contributes)
        self._send_alerts(signals)
        if contributes:
            contribution = records.Contribution(seen_key, task.stage.name, joined, values, event.occurred_at)
            if customer:
                contribution = msgspec.structs.replace(
                    contribution, body=body, offset=offset, ingested_at=ingested_at, late=late
                )
            join_key = self.plan.stages[0].key(event, EventContext(event, task.engine))
            self._produce(self.topics.join, (join_key or "").encode(), records.encode(contribution))

    def _record_late(self, task: Task, event: Event, offset: int, ingested_at: float) -> None:
        self.metrics.events_late.inc()
        watermark = task.engine.watermark(task.partition)
        late = LateEvent.of(event, offset, watermark, ingested_at)
        self._produce_alert(f"late\x1f{task.partition}", AlertRecord(late=late))

    def _join(self, task: Task, part: records.Contribution) -> None:
        """Collect an event's stage values; once all its stages sent theirs, evaluate its rules."""
        parts = task.pending.setdefault(part.event_key, {})
        parts[part.stage] = part
        if not set(part.expected) <= set(parts):
            task.pending_changes[part.event_key] = parts
            return
        del task.pending[part.event_key]
        if part.event_key in task.pending_written:
            task.pending_written.discard(part.event_key)
            task.pending_changes[part.event_key] = None
        else:  # begun and completed within this batch: the changelog never held it
            task.pending_changes.pop(part.event_key, None)
        first = parts[CUSTOMER]
        event = decode_event(first.body)
        values = {k: v for p in parts.values() for k, v in p.values.items()}
        position = (first.offset, task.partition, first.ingested_at)
        signals, _ = run_stage(self.plan, task.stage, task.engine, event, position, values, final=True)
        # late as the customer stage, which holds the event's partition watermark, judged it
        self._send_alerts([msgspec.structs.replace(s, late=first.late) for s in signals])

    def _send_alerts(self, signals: list[AlertSignal]) -> None:
        for signal in signals:
            self._produce_alert(f"{signal.rule_id}\x1f{signal.dedup_key}", AlertRecord(signal=signal))

    def _produce_alert(self, key: str, record: AlertRecord) -> None:
        self._produce(self.topics.alerts, key.encode(), records.encode(record))

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        while True:
            try:
                if partition is None:
                    self.producer.produce(topic, value, key)
                else:
                    self.producer.produce(topic, value, key, partition)
                return
            except BufferError:  # the producer's queue is full: let it drain
                self.producer.poll(0.1)

    # -- time, expiry, changelogs ------------------------------------------------------------------

    def _fire_idle_timers(self, now: float) -> None:
        """Quiet partitions: let event time run on with the wall clock so absence timers fire
        (as the embedded processor does), extrapolated from the last event's arrival."""
        for task in self.tasks.values():
            engine = task.engine
            lateness = engine.allowed_lateness_s
            if not len(engine.timers) or not engine.max_event_time or now - task.last_record_at < lateness:
                continue
            latest = max(engine.max_event_time.values())
            self._send_alerts(engine.advance(latest + (now - task.last_ingested_at) - lateness))

    def _expire(self) -> None:
        window = self.settings.kafka_dedup_window_s
        for task in self.tasks.values():
            if not task.engine.max_event_time:
                continue
            watermark = task.engine.watermark()
            task.engine.expire(watermark)
            for batch, (newest, ids) in list(task.seen_batches.items()):
                if newest < watermark - window:
                    for key in ids:
                        task.seen.pop(key, None)
                    del task.seen_batches[batch]
                    task.seen_dropped.append(batch)
            stale = [k for k, parts in task.pending.items() if _occurred(parts) < watermark - JOIN_HORIZON_S]
            for key in stale:
                log.warning("join gave up on event %s: stages %s never sent their values", key, task.pending[key])
                del task.pending[key]
                task.pending_changes[key] = None

    def _write_changelogs(self) -> None:
        encode = records.encode
        for task in self.tasks.values():
            topic = self.topics.changelog(task.stage.name)
            p = task.partition
            for name, key, state in task.engine.take_changes():
                self._produce(topic, records.state_key(name, key), state, p)
            if task.seen_new:
                batch = str(task.last_offset)
                self._produce(topic, records.state_key(SEEN, batch), encode(task.seen_new), p)
                task.seen_batches[batch] = (max(at for _, at in task.seen_new), [k for k, _ in task.seen_new])
                task.seen_new = []
            for batch in task.seen_dropped:
                self._produce(topic, records.state_key(SEEN, batch), None, p)
            task.seen_dropped.clear()
            for key, parts in task.pending_changes.items():
                value = None if parts is None else encode(list(parts.values()))
                self._produce(topic, records.state_key(PENDING, key), value, p)
                if parts is not None:
                    task.pending_written.add(key)
            task.pending_changes.clear()
            # event time and the wall-clock time of the last arrival: idle timers extrapolate from both
            clock = (task.engine.max_event_time.get(p), task.last_ingested_at)
            if clock[0] is not None and clock != task.clock_written:
                self._produce(topic, records.state_key(WATERMARK, ""), encode(clock), p)
                task.clock_written = clock

    # -- restore ----------------------------------------------------------------------------------

    def _restore_pending(self) -> None:
        """Build the tasks of newly assigned partitions from their changelogs (read_committed,
        to the end) before any of their records is processed."""
        if not self.pending:
            return
        started = time.monotonic()
        wanted = {}
        for topic, partition in sorted(self.pending):
            name = self.topics.stage_of_topic(topic, self.plan)
            stage = self.plan.rules if name == JOIN else self.plan.stage(name)
            wanted[(self.topics.changelog(stage.name), partition)] = (stage, (topic, partition))
        rows = read_changelogs(self.settings, self.topics, list(wanted))
        total = 0
        for changelog, (stage, task_id) in wanted.items():
            task = self._task(stage, task_id[1], rows[changelog])
            self.tasks[task_id] = task
            total += len(rows[changelog])
        self.pending.clear()
        report = RestoreReport(len(wanted), total, time.monotonic() - started)
        self.metrics.state_restore.observe(report.seconds)
        log.info(
            "worker %s restored %d partitions (%d changelog rows) in %.2f s",
            self.worker_id,
            report.tasks,
            report.rows,
            report.seconds,
        )

    def _task(self, stage: Stage, partition: int, rows: dict[tuple[str, str], bytes]) -> Task:
        engine = Engine(stage.pack, self.settings.allowed_lateness_s)
        engine.lists.update({k: v for k, v in self._lists.items() if k in stage.pack.lists})
        states = [(name, key, value) for (name, key), value in rows.items() if not name.startswith("@")]
        marks, last_ingested_at = {}, 0.0
        if (WATERMARK, "") in rows:
            marks[partition], last_ingested_at = msgspec.msgpack.decode(rows[(WATERMARK, "")], type=tuple[float, float])
        engine.restore(states, marks)
        engine.take_changes()
        seen: dict[str, float] = {}
        seen_batches = {}
        for (name, batch), value in rows.items():
            if name == SEEN:
                entries = msgspec.msgpack.decode(value, type=list[tuple[str, float]])
                seen.update(entries)
                seen_batches[batch] = (max(at for _, at in entries), [k for k, _ in entries])
        pending = {
            key: {c.stage: c for c in msgspec.msgpack.decode(v, type=list[records.Contribution])}
            for (name, key), v in rows.items()
            if name == PENDING
        }
        return Task(
            stage,
            partition,
            engine,
            seen,
            seen_batches=seen_batches,
            pending=pending,
            pending_written=set(pending),
            clock_written=(marks.get(partition), last_ingested_at),
            last_record_at=self.clock.time(),  # its backlog comes first: no idle timer fires at once
            last_ingested_at=last_ingested_at,
        )

    def _follow_store(self) -> None:
        """Between batches: take up a pack activated, or a list edited, through the API."""
        now = self.clock.time()
        if self.packs is None or now - self._last_pack_check < PACK_EVERY_S:
            return
        self._last_pack_check = now
        try:
            active = self.packs.active()
            self._lists = self.packs.lists()
        except RingfenceError:
            log.warning("cannot read the rule pack from the store; keeping the running one", exc_info=True)
            return
        if (
            active is not None
            and active.digest != self.plan.pack.digest
            and self.reload(load_pack(active.text, stored=True))
        ):
            log.info("worker %s runs rule pack %s", self.worker_id, active.version)
        for task in self.tasks.values():
            task.engine.lists.update({k: v for k, v in self._lists.items() if k in task.stage.pack.lists})

    def reload(self, pack: RulePack) -> bool:
        """Run ``pack`` from the next batch, keeping the state of unchanged definitions. A pack
        that needs other stages (topics) is refused: it needs ``kafka init`` and a restart."""
        plan = plan_stages(pack)
        if plan.names != self.plan.names:
            log.error(
                "rule pack %s needs the stages %s (running: %s): run `ringfence kafka init` and restart the workers",
                pack.version,
                plan.names,
                self.plan.names,
            )
            return False
        self.plan = plan
        for task in self.tasks.values():
            task.stage = plan.rules if task.stage.name == JOIN else plan.stage(task.stage.name)
            task.engine = task.engine.reloaded(task.stage.pack)
        return True


def read_changelogs(
    settings: Settings, topics: Topics, partitions: list[tuple[str, int]], timeout_s: float = 300.0
) -> dict[tuple[str, int], dict[tuple[str, str], bytes]]:
    """The committed rows of changelog ``partitions``, newest value per key (tombstones drop it)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    rows: dict[tuple[str, int], dict[tuple[str, str], bytes]] = {tp: {} for tp in partitions}
    if not partitions:
        return rows
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": topics.group("restore"),  # never committed: restores always read everything
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,  # the end is what it waits for: do not let the broker hold fetches
            },
        )
    )
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
        remaining = set(partitions)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {sorted(remaining)} took over {timeout_s:.0f} s")
            for message in consumer.consume(5000, 0.05):
                tp = (str(message.topic()), int(message.partition() or 0))
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(tp)
                        continue
                    raise RuntimeError(f"reading changelog {tp}: {error.str()}")
                key = records.decode_state_key(message.key() or b"")
                value = message.value()
                if value is None:
                    rows[tp].pop(key, None)
                else:
                    rows[tp][key] = value
    finally:
        consumer.close()
    return rows


def _is_kafka(error: BaseException) -> bool:
    from confluent_kafka import KafkaException

    return isinstance(error, KafkaException)


def _header(message: Any, name: str) -> list[str]:
    for key, value in message.headers() or ():
        if key == name and value:
            return str(value.decode()).split(",")
    return []


def _occurred(parts: dict[str, records.Contribution]) -> float:
    return min(c.occurred_at for c in parts.values())
