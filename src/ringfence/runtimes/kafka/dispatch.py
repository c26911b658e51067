"""``ringfence serve dispatch``: the alerts topic into the alert pipeline and PostgreSQL.

Each batch of a partition is applied with :meth:`SqlStore.commit_batch`, which writes the
alerts (deduplicated upserts), their outbox entries, late events *and the partition's
offset* in one PostgreSQL transaction. The store, not Kafka, holds the dispatch offsets:
after a crash the service resumes exactly after the last batch it committed, so a signal is
applied once however often it is consumed. The notifications then go through the same
:class:`~ringfence.alerts.dispatcher.Dispatcher` as the embedded runtime's (grouping,
silences, inhibition, routing, a notification log that sends each notification once);
several dispatch services may run, each on its own partitions, sharing that log. Late
events are kept as long as the events topic keeps what they point at.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from ringfence.alerts.dispatcher import Dispatcher
from ringfence.alerts.stages import PASS_WAIT_S
from ringfence.config import Settings
from ringfence.engine.rules import AlertSignal
from ringfence.errors import StaleBatch
from ringfence.metrics import Metrics
from ringfence.runtimes.kafka import records
from ringfence.runtimes.kafka.client_stats import counted
from ringfence.runtimes.kafka.topics import EVENTS_KEPT_S, Topics, client_config, take, topics_of
from ringfence.store.base import Checkpoint, LateEvent
from ringfence.store.sql import SqlStore

log = logging.getLogger("ringfence.kafka.dispatch")

BATCH = 1000
POLL_S = 0.2
RETENTION_EVERY_S = 60.0
RETENTION_ROWS = 5_000  # late events a transaction, up to RETENTION_SLICES a round
RETENTION_SLICES = 20


def checkpoint_name(topic: str, partition: int) -> str:
    return f"dispatch:{topic}:{partition}"


class DispatchService:
    """Consumes the alerts topic in the dispatch group; see the module docstring."""

    def __init__(
        self, settings: Settings, store: SqlStore, dispatcher: Dispatcher, metrics: Metrics | None = None
    ) -> None:
        from confluent_kafka import Consumer

        self.topics: Topics = topics_of(settings)
        self.store = store
        self.dispatcher = dispatcher
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": self.topics.group("dispatch"),
                    "client.id": "ringfence-dispatch",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 1000,
                    **counted(metrics, "dispatch.consumer"),
                },
            )
        )

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe([self.topics.alerts], on_assign=self._assigned)
        stepped = retained = 0.0
        try:
            while not stop.is_set():
                messages = take(self.consumer, BATCH, POLL_S)
                if messages:
                    self.apply(messages)
                if time.monotonic() - stepped >= POLL_S:  # its queries are the store's, not the batch's
                    self.dispatcher.step(wait=PASS_WAIT_S)  # a slow receiver's sends finish on their threads
                    stepped = time.monotonic()
                if time.monotonic() - retained >= RETENTION_EVERY_S:
                    self.forget_late_events()
                    retained = time.monotonic()
        finally:
            self.consumer.close()

    def forget_late_events(self) -> int:
        """Delete the late events ingested before the events topic's retention (what they point
        at is gone then), a slice a transaction; how many. A failure is logged and tried again
        next round: it must not stop dispatching."""
        before, forgotten = self.dispatcher.clock.time() - EVENTS_KEPT_S, 0
        try:
            for _ in range(RETENTION_SLICES):
                deleted = self.store.forget_late_events(before, RETENTION_ROWS)
                forgotten += deleted
                if deleted < RETENTION_ROWS:
                    break
        except Exception:
            log.exception("late events' retention failed; it runs again in %.0f s", RETENTION_EVERY_S)
        return forgotten

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """Start each partition at the offset the store committed for it (the one after its last batch)."""
        from confluent_kafka import OFFSET_BEGINNING

        for tp in partitions:
            following, _ = self.store.load_checkpoint(checkpoint_name(tp.topic, tp.partition))
            tp.offset = following or OFFSET_BEGINNING
        consumer.assign(partitions)

    def apply(self, messages: list[Any]) -> int:
        """Commit the signals and late events of ``messages``, a transaction per partition."""
        from confluent_kafka import TopicPartition

        by_partition: dict[tuple[str, int], list[Any]] = {}
        for message in messages:
            if message.error() is not None:
                log.warning("consumer error: %s", message.error())
                continue
            by_partition.setdefault((str(message.topic()), int(message.partition() or 0)), []).append(message)
        created = 0
        for (topic, partition), batch in by_partition.items():
            signals: list[AlertSignal] = []
            late: list[LateEvent] = []
            for message in batch:
                record = records.decode_alert(message.value())
                if record.signal is not None:
                    signals.append(record.signal)
                if record.late is not None:
                    late.append(record.late)
            following = batch[-1].offset() + 1
            name = checkpoint_name(topic, partition)
            checkpoint = Checkpoint(name, following, late_events=late, after=batch[0].offset())
            try:
                created += len(self.store.commit_batch(signals, checkpoint, self.dispatcher.clock.time()))
            except StaleBatch as stale:  # this service lost the partition while it held the batch
                log.warning("%s; dropped, and read again from there if still assigned", stale)
                with contextlib.suppress(Exception):  # not assigned any more: the owner reads on
                    self.consumer.seek(TopicPartition(topic, partition, stale.stored))
                continue
            # for lag monitoring only: the store's offset is the one that counts
            self.consumer.commit(offsets=[TopicPartition(topic, partition, following)], asynchronous=True)
        return created
