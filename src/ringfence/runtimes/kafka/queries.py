"""A customer's current feature values, asked of the process worker that holds them.

The values live in the memory of the worker owning the customer's partition of the events
topic (its customer stage task). The api service asks through two small topics: a query goes
to the customer's partition of ``queries``, which the worker owning that partition of the
events topic reads (every topic has the same partitions); the worker answers on ``answers``,
which the api service reads from where it stood when it started. Nothing is committed: a
worker reads its partitions' queries from where they stood when it got them, and a query
nobody answers in time (its partition moving, its worker restoring) is answered 503, try
again. Anyone who may write the queries topic may ask for any customer's features, and anyone
who may write the answers topic may answer: grant writing queries and reading answers to the
api service, reading queries and writing answers to the workers, as the events topic is granted.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from ringfence.config import Settings
from ringfence.errors import RequestError
from ringfence.runtimes.kafka.records import partition_for
from ringfence.runtimes.kafka.topics import Topics, client_config, take, topics_of

log = logging.getLogger("ringfence.kafka.queries")

MAX_QUERIES = 100  # answered per turn of a worker's loop
TIMEOUT_S = 5.0  # an answer's wait, all told
MAX_ASKING = 8  # queries an API process waits on at once (each holds one of its threads)
Features = tuple[float, dict[str, Any]]  # the event time they hold at, and the values


class FeatureQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    customer_id: str


class FeatureAnswer(msgspec.Struct, frozen=True):
    id: str
    at: float
    features: dict[str, Any]


_query = msgspec.msgpack.Decoder(FeatureQuery)
_answer = msgspec.msgpack.Decoder(FeatureAnswer)
_encode = msgspec.msgpack.Encoder().encode


class QueryServer:
    """A process worker's side: reads the queries of the partitions it holds and answers them."""

    def __init__(self, settings: Settings, worker_id: str) -> None:
        from confluent_kafka import Consumer, Producer

        self.topics: Topics = topics_of(settings)
        config = client_config(settings, **{"client.id": f"ringfence-queries-{worker_id}"})
        # assigned, never subscribed: the group id is librdkafka's requirement, nothing is committed
        self.consumer = Consumer(
            config
            | {"group.id": self.topics.group("queries"), "enable.auto.commit": False, "enable.partition.eof": False}
        )
        self.producer = Producer(config | {"linger.ms": 0})
        self._following: frozenset[int] = frozenset()
        self._warned = -math.inf

    def follow(self, partitions: frozenset[int]) -> None:
        """Read the queries of ``partitions`` (those whose customers this worker holds) from their end."""
        from confluent_kafka import OFFSET_END, TopicPartition

        gone, new = self._following - partitions, partitions - self._following
        if gone:  # only the partitions that changed: the others' waiting queries stay in hand
            self.consumer.incremental_unassign([TopicPartition(self.topics.queries, p) for p in sorted(gone)])
            self._following -= gone
        if new:
            self.consumer.incremental_assign([TopicPartition(self.topics.queries, p, OFFSET_END) for p in sorted(new)])
            self._following |= new

    def answer(self, lookup: Callable[[int, str], Features | None]) -> int:
        """Answer the queries that arrived, without waiting; ``lookup`` gives a customer's
        features from the partition's task (None: not held here now). Returns those answered."""
        if not self._following:
            return 0
        answered = 0
        for message in self.consumer.consume(MAX_QUERIES, 0):
            if message.error() is not None:
                continue
            partition = int(message.partition() or 0)
            try:
                query = _query.decode(message.value() or b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.warn(f"skipped a record that is no query: {exc}")
                continue
            if partition_for(query.customer_id.encode(), self.topics.partitions) != partition:
                self.warn(f"skipped a query in partition {partition}, not its customer's")
                continue  # this partition's task does not hold the customer: no answer is better than a wrong one
            found = lookup(partition, query.customer_id)
            if found is None:
                continue  # the api service times out and says to try again
            at, features = found
            self.producer.produce(self.topics.answers, _encode(FeatureAnswer(query.id, at, features)))
            answered += 1
        self.producer.poll(0)
        return answered

    def warn(self, what: str) -> None:
        """Log ``what``, once a minute at most (whoever writes the topic could flood the log)."""
        now = time.monotonic()
        if now - self._warned >= 60.0:
            log.warning("feature queries: %s", what)
            self._warned = now

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(5)


class FeatureClient:
    """The api service's side: asks, and waits for the answer read by a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

        self.topics: Topics = topics_of(settings)
        config = client_config(settings, **{"client.id": "ringfence-api-queries"})
        # a query not delivered within the wait is given up, not answered minutes later
        self.producer = Producer(config | {"linger.ms": 0, "message.timeout.ms": int(TIMEOUT_S * 1000)})
        self.consumer = Consumer(config | {"group.id": self.topics.group("api-answers"), "enable.auto.commit": False})
        try:
            found = self.consumer.list_topics(self.topics.answers, timeout=TIMEOUT_S).topics.get(self.topics.answers)
            if found is None or found.error is not None or not found.partitions:
                raise _unavailable(f"the topic {self.topics.answers} is missing (run ringfence kafka init)")
            # from where the answers end now, so no answer to a query sent later is skipped
            partitions = [TopicPartition(self.topics.answers, p) for p in sorted(found.partitions)]
            for tp in partitions:
                tp.offset = self.consumer.get_watermark_offsets(tp, TIMEOUT_S)[1]
            self.consumer.assign(partitions)
        except (KafkaException, RequestError) as exc:
            self.consumer.close()
            self.producer.flush(0)
            raise exc if isinstance(exc, RequestError) else _unavailable(f"the brokers: {exc}") from exc
        self._for_askers()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="feature-answers", daemon=True)
        self._reader.start()

    def _for_askers(self) -> None:
        """What askers share (no broker in it): the queries waiting, and the places to wait."""
        self._waiting: dict[str, tuple[threading.Event, list[Features | Exception]]] = {}
        self._lock = threading.Lock()
        self._asking = threading.BoundedSemaphore(MAX_ASKING)

    def ask(self, customer_id: str, timeout_s: float = TIMEOUT_S) -> Features:
        """The customer's feature values, from the worker holding them, within ``timeout_s``
        (RequestError 503 otherwise)."""
        # each asker holds one of the API's threads while it waits: a flood of queries no worker
        # answers (a rebalance, a restore) must not take them all from every other request
        if not self._asking.acquire(blocking=False):
            raise _unavailable(f"{MAX_ASKING} feature queries are waiting for the workers already")
        try:
            return self._ask(customer_id, timeout_s)
        finally:
            self._asking.release()

    def _ask(self, customer_id: str, timeout_s: float) -> Features:
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout_s
        query = FeatureQuery(uuid.uuid4().hex, customer_id)
        arrived, slot = threading.Event(), list[Features | Exception]()
        with self._lock:
            self._waiting[query.id] = (arrived, slot)

        def delivered(err: Any, _message: Any) -> None:
            if err is not None:
                log.warning("a feature query was not delivered: %s", err)
                slot.append(_unavailable(f"the query was not delivered: {err}"))
                arrived.set()

        try:
            key = customer_id.encode()
            partition = partition_for(key, self.topics.partitions)
            try:
                self.producer.produce(
                    self.topics.queries, _encode(query), key, partition=partition, on_delivery=delivered
                )
                self.producer.flush(max(0.0, deadline - time.monotonic()))
            except (BufferError, KafkaException) as exc:
                raise _unavailable(f"the query was not sent: {exc}") from exc
            if not arrived.wait(max(0.0, deadline - time.monotonic())):
                raise _unavailable("the process worker holding this customer did not answer (its partition moving?)")
            if isinstance(slot[0], Exception):
                raise slot[0]
            return slot[0]
        finally:
            with self._lock:
                self._waiting.pop(query.id, None)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                messages = take(self.consumer, MAX_QUERIES, 0.2)
            except Exception:  # closed under it, or the brokers gone: the askers time out
                log.warning("cannot read feature answers", exc_info=True)
                self._stop.wait(1.0)
                continue
            for message in messages:
                if message.error() is not None:
                    continue
                try:
                    answer = _answer.decode(message.value() or b"")
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                with self._lock:
                    waiting = self._waiting.get(answer.id)
                if waiting is not None:
                    waiting[1].append((answer.at, answer.features))
                    waiting[0].set()

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=5)
        self.consumer.close()
        self.producer.flush(5)


def _unavailable(why: str) -> RequestError:
    return RequestError(
        503, "unavailable", f"cannot ask for the customer's features now: {why}; try again", {"retry_after": 1}
    )
