"""``ringfence serve ingest``'s way into the log: each accepted event goes to the events topic
and, for every other keyed stage its type needs, to the stages topic, all in one Kafka
transaction. The events topic holds a record per event (evidence points at it); the stages
topic gets one record per stage and partition per transaction, holding that stage's events
of the partition in order (:class:`~.records.StageItem`), so an event costs the broker one
record, not one per stage, and a transaction writes two topics, not one per stage.

So every stage sees the events of each of its keys in the order ingest accepted them (as
the embedded runtime's journal orders them), and an event is in all its topics or in none.
Requests are grouped into transactions (one at a time per ingest process, as a group
commit, at most one every ``kafka_commit_interval_ms``); a request is answered 202 only once
its transaction committed on every in-sync replica (``acks=all``). An event a request
holds twice is written once (:func:`~ringfence.runtimes.ingest.first_of_each`); a producer's
retried request is not known here: every stage drops events it has
seen (:mod:`.seen`), and the customer stage counts them in ``ringfence_events_duplicate``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ringfence.config import Settings
from ringfence.engine.engine import Engine, EventContext
from ringfence.engine.stages import StagePlan
from ringfence.errors import OverloadedError
from ringfence.events.model import Event, encode_event
from ringfence.metrics import Metrics
from ringfence.runtimes.ingest import settle, stopping
from ringfence.runtimes.kafka.client_stats import counted
from ringfence.runtimes.kafka.records import (
    ITEMS_HEADER,
    JOIN_HEADER,
    STAGE_HEADER,
    StageItem,
    encode_in_records,
    partition_for,
)
from ringfence.runtimes.kafka.topics import MAX_RECORD_BYTES, TRANSACTIONAL_RETRIES, client_config, topics_of

log = logging.getLogger("ringfence.kafka.ingest")

MAX_REQUESTS_PER_TRANSACTION = 500
# what one transaction holds at most (always one request, whatever its size): the brokers abort
# a transaction open longer than TRANSACTION_TIMEOUT_S, and with it every request it carries, so
# a few large requests must not make one that long (some 20,000 events a second go through here)
MAX_EVENTS_PER_TRANSACTION = 20_000
MAX_BYTES_PER_TRANSACTION = 16 * 1024 * 1024
TRANSACTION_TIMEOUT_S = 10.0  # a killed ingest's open transaction holds the workers' reads this long
STALLED_S = 10.0  # a transaction waiting on the brokers this long: ingest says it is not ready
COMMIT_TIMEOUT_S = 30.0  # a commit sent completes however long it takes: waiting less answers 503 for kept events


class Request(NamedTuple):
    events: list[Event]
    future: asyncio.Future[list[int | None]]
    loop: asyncio.AbstractEventLoop
    arrived: float  # epoch seconds, when ingest took it


class Taken(NamedTuple):
    """A request the writer thread took, its events encoded (what the transaction writes)."""

    request: Request
    bodies: list[bytes]
    size: int


INTERNAL_ERROR = "the event log did not take the events (an internal error, logged); retry"


class KafkaAppender:
    """Appends events to their topics; thread-safe, asyncio-friendly (see the module docstring)."""

    def __init__(
        self, settings: Settings, plan: Callable[[], StagePlan], instance_id: str, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics  # counts the producer's requests to the brokers
        self.topics = topics_of(settings)
        self.plan = plan
        self.transactional_id = f"{self.topics.prefix}-ingest-{instance_id}"
        self._keys: tuple[StagePlan, Engine] | None = None
        self._committing_since: float | None = None  # monotonic: a transaction under way since
        self._refused: str | None = None  # why the brokers refused the last transaction, until one goes through
        self._requests: queue.Queue[Request] = queue.Queue()
        self._stop = threading.Event()
        self._producer = self._new_producer()
        self._thread = threading.Thread(target=self._run, name="kafka-ingest", daemon=True)
        self._thread.start()

    def _new_producer(self) -> Any:
        from confluent_kafka import Producer

        producer = Producer(
            client_config(
                self.settings,
                **{
                    "client.id": "ringfence-ingest",
                    "transactional.id": self.transactional_id,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 2,
                    "message.max.bytes": MAX_RECORD_BYTES // 4,  # as the stages topic takes: room over ~1 MB
                    "compression.type": "lz4",
                    "transaction.timeout.ms": int(TRANSACTION_TIMEOUT_S * 1000),
                    **TRANSACTIONAL_RETRIES,
                    "partitioner": "murmur2_random",  # the Java clients' partitioner: every producer agrees
                    **counted(self.metrics, "ingest.producer"),
                },
            )
        )
        producer.init_transactions(60)
        return producer

    async def append(self, events: list[Event]) -> list[int | None]:
        """Write ``events`` to their topics; return once committed. Raises OverloadedError (503,
        retry) when the brokers do not take them: then none of the request's events is kept."""
        if self._stop.is_set():
            raise stopping()
        stalled = self._stalled_for()
        if stalled > STALLED_S:  # the brokers away: an answer now, not one held until they are back
            raise OverloadedError(f"ingest's transaction has waited {stalled:.0f} s on the brokers; retry", 1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int | None]] = loop.create_future()
        self._requests.put(Request(events, future, loop, time.time()))
        if self._stop.is_set():  # closed meanwhile: the thread may have gone before it came
            self._refuse_queued()
        return await future

    def trouble(self) -> str | None:
        """What keeps the brokers from taking events now, for readiness: a transaction waiting
        on them past :data:`STALLED_S` (new requests are answered 503 at once meanwhile, not
        held until the brokers are back), or the last one they refused, until one goes through."""
        stalled = self._stalled_for()
        if stalled > STALLED_S:
            return f"ingest's transaction has waited {stalled:.0f} s on the brokers"
        return self._refused

    def _stalled_for(self) -> float:
        since = self._committing_since
        return time.monotonic() - since if since is not None else 0.0

    @property
    def alive(self) -> bool:
        """Its writer thread runs: false once closed, or after a bug ended it (readiness says so)."""
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:
            log.exception("ingest's writer thread ended on a bug; requests are answered 503 until a restart")
        finally:  # stopped, or a bug: every request still waiting is answered
            self._stop.set()
            self._refuse_queued()

    def _serve(self) -> None:
        interval = self.settings.kafka_commit_interval_ms / 1000
        began = -math.inf
        held: Taken | None = None  # taken, but for the next transaction: it did not fit
        while not self._stop.is_set():
            if held is None:
                try:
                    held = self._take(self._requests.get(timeout=0.1))
                except queue.Empty:
                    self._producer.poll(0)  # serves its statistics when no commit does
                    continue
                if held is None:
                    continue
            batch, held = [held], None
            events, size = len(batch[0].request.events), batch[0].size
            # every transaction costs the brokers requests and a marker in each partition it
            # writes, however few events it holds: the requests of an interval share one
            until = began + interval
            while len(batch) < MAX_REQUESTS_PER_TRANSACTION and not self._stop.is_set():
                wait = until - time.monotonic()
                try:
                    taken = self._take(self._requests.get(timeout=wait) if wait > 0 else self._requests.get_nowait())
                except queue.Empty:
                    if wait <= 0:
                        break
                    continue
                if taken is None:
                    continue
                if events + len(taken.request.events) > MAX_EVENTS_PER_TRANSACTION or (
                    size + taken.size > MAX_BYTES_PER_TRANSACTION
                ):
                    held = taken
                    break
                batch.append(taken)
                events, size = events + len(taken.request.events), size + taken.size
            began = time.monotonic()
            try:
                self._commit(batch)
            except Exception:  # one batch's bug must not stop ingest for every later request
                log.exception("ingest transaction failed unexpectedly; its requests are answered 503")
                self._abandon([t.request for t in batch])
        if held is not None:
            _fail(held.request, stopping())

    @staticmethod
    def _take(request: Request) -> Taken | None:
        """``request`` encoded; None (it is answered 503) if a bug refused it, alone."""
        try:
            bodies = [encode_event(e) for e in request.events]
        except Exception:
            log.exception("ingest could not encode a request's events; it is answered 503")
            _fail(request, OverloadedError(INTERNAL_ERROR, 1))
            return None
        return Taken(request, bodies, sum(map(len, bodies)))

    def _refuse_queued(self) -> None:
        """Answer 503 to every request still queued: ingest is stopping and will not write them
        (the client retries, on another instance or this one started again)."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            _fail(request, stopping())

    def _abandon(self, batch: list[Request]) -> None:
        """Fail ``batch``'s requests (nothing of them is kept) and start over with a fresh producer."""
        failure = OverloadedError(INTERNAL_ERROR, 1)
        for request in batch:
            _fail(request, failure)
        try:
            self._producer = self._new_producer()  # aborts the open transaction
        except Exception:
            log.exception("could not start a new Kafka producer; the next request tries again")

    def _commit(self, batch: list[Taken]) -> None:
        """One transaction of ``batch``'s requests' events, as they were encoded when taken."""
        from confluent_kafka import KafkaException

        requests = [taken.request for taken in batch]
        offsets: list[list[int | None]] = [[None] * len(request.events) for request in requests]
        # the records' time: when ingest took the first of the requests, so their wait counts in
        # what follows; but never more than an interval back, however long a stalled commit held
        # them, since the workers' idle watermarks advance from it
        now = time.time()
        at = int(max(requests[0].arrived, now - self.settings.kafka_commit_interval_ms / 1000) * 1000)
        self._committing_since = time.monotonic()
        try:
            self._producer.begin_transaction()
            plan, keys = self._plan_and_keys()
            copies: dict[tuple[str, int], list[StageItem]] = {}  # each stage's events by partition, in order
            for i, taken in enumerate(batch):
                for j, (event, body) in enumerate(zip(taken.request.events, taken.bodies, strict=True)):
                    self._produce(plan, keys, event, body, at, offsets[i], j, copies)
            for (stage, partition), items in copies.items():
                headers = [(ITEMS_HEADER, b"1"), (STAGE_HEADER, stage.encode())]
                for value in encode_in_records(items, _item_size):
                    self._send(self.topics.stages, value, None, headers, at, None, partition)
            self._producer.commit_transaction(COMMIT_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0]
            # (still committing until the abort below returns: it waits on the same brokers)
            self._refused = f"the brokers refused ingest's last transaction ({error.str()})"
            log.warning("ingest transaction failed (%s); its requests are answered 503", error.str())
            # answered before the abort, which may wait on the brokers as long as the commit did
            failure = OverloadedError(f"the event log did not take the events: {error.str()}", 1)
            for request in requests:
                _fail(request, failure)
            if error.fatal():
                self._producer = self._new_producer()  # fenced or broken: a fresh one aborts the open transaction
            else:
                try:
                    self._producer.abort_transaction(COMMIT_TIMEOUT_S)
                except KafkaException:
                    self._producer = self._new_producer()
            return
        finally:
            self._committing_since = None
        self._refused = None
        for request, written in zip(requests, offsets, strict=True):
            settle(request.loop, request.future, [o if o is not None else 0 for o in written])

    def _plan_and_keys(self) -> tuple[StagePlan, Engine]:
        """The current plan, and an engine of it for reading events' key fields (made once per plan)."""
        plan = self.plan()
        if self._keys is None or self._keys[0] is not plan:
            self._keys = (plan, Engine(plan.stages[0].pack))
        return self._keys

    def _produce(
        self,
        plan: StagePlan,
        keys: Engine,
        event: Event,
        body: bytes,
        at: int,
        offsets: list[int | None],
        index: int,
        copies: dict[tuple[str, int], list[StageItem]],
    ) -> None:
        """Send ``event`` to the events topic; add it to ``copies`` of the stages it needs."""
        ctx = EventContext(event, keys)
        route, joined = plan.route(event, ctx)
        headers = [(JOIN_HEADER, ",".join(joined).encode())] if joined else None

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                offsets[index] = int(msg.offset())

        customer_key = (plan.stages[0].key(event, ctx) or "").encode()
        self._send(self.topics.events, body, customer_key, headers, at, delivered)
        for stage, key in route:
            where = (stage.name, partition_for(key.encode(), self.topics.partitions))
            copies.setdefault(where, []).append(StageItem(body, joined))

    def _send(
        self, topic: str, body: bytes, key: bytes | None, headers: Any, at: int, on_delivery: Any, partition: int = -1
    ) -> None:
        where = {} if partition < 0 else {"partition": partition}
        while True:
            try:
                self._producer.produce(
                    topic, body, key, headers=headers, timestamp=at, on_delivery=on_delivery, **where
                )
                return
            except BufferError:  # the producer's queue is full: let it drain
                self._producer.poll(0.05)

    def close(self) -> None:
        """Stop taking requests: those in the transaction under way are answered as it ends,
        those still queued 503."""
        self._stop.set()
        self._thread.join(timeout=COMMIT_TIMEOUT_S)
        self._refuse_queued()
        self._producer.flush(10)


def _fail(request: Request, error: Exception) -> None:
    settle(request.loop, request.future, error=error)


def _item_size(item: StageItem) -> int:
    return len(item.body) + 16 + sum(len(stage) + 2 for stage in item.joined)
