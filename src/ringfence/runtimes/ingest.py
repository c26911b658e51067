"""Ingest: validate a producer's body and make its valid events durable in the log.

Shared by the HTTP API, ``ringfence replay`` and the demo traffic generator. A batch is
answered only after its events are durable (group commit), so a 202 is a promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ringfence.clock import Clock
from ringfence.errors import FieldError, OverloadedError, RequestError, StoreError
from ringfence.events.decode import (
    ORDINARY_EVENT_S,
    REFERENCE_ONLY,
    DecodedBatch,
    MalformedBody,
    Rejection,
    TooCostly,
    TooManyEvents,
    decode_batch,
    rejections_answer,
)
from ringfence.events.fx import FxTable
from ringfence.events.model import Event
from ringfence.metrics import Metrics
from ringfence.runtimes.turns import Turns

RETRY_AFTER_S = 2
SHARE_HALF_LIFE_S = 10.0  # how quickly a producer's recent events count for less
SOFT_LAG = 0.5  # of max_lag_events: past it, a producer over its share is turned away first
# as SOFT_LAG, by how long events wait rather than how many: events costly to process (each
# raising alerts) make a lag of seconds long before one of half max_lag_events
SOFT_LAG_S = 5.0
# ...and past this wait, a producer sending more than its share of what is processed is turned
# away even when it sends alone: what it queued is ahead of whoever sends next (6 s of one key's
# alert-raising events, taken at 17,000 a second and processed at 3,000, held the next key's
# alerts 34 s in a re-test)
MAX_WAIT_S = 10.0
OVER_SHARE = 1.5  # without what was processed to share out: too much past this many mean shares
# behind, what the keys may send together is this much of what was processed lately, so that
# what waits drains: with 1.5 fair shares each, two keys flooding kept 20-30 s of events waiting
DRAIN = 0.8
T = TypeVar("T")
log = logging.getLogger("ringfence.ingest")
# validation beyond an ordinary event's time (ORDINARY_EVENT_S) is charged to its producer's
# ValidationBudget, which refills at COSTLY_RATE of a second a second, up to COSTLY_BURST_S; a
# request may spend what its producer has left (at least COSTLY_FLOOR_S), no more
COSTLY_RATE = 0.25
COSTLY_BURST_S = 2.0
COSTLY_FLOOR_S = 0.1
OFF_LOOP_BYTES = 64 << 10  # a body at least this large is validated off the event loop


@dataclass
class IngestResult:
    """What happened to each event of a body (DESIGN §5, ``POST /v1/events``)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: Sequence[Rejection] = ()
    duplicate_ids: list[str] = field(default_factory=list)
    costly_s: float = 0.0  # validation beyond ordinary events' time (not answered: the producer's budget)
    validation_s: float = 0.0  # validation in all (not answered: the producer's turns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "duplicate_event_ids": self.duplicate_ids,
            "rejected": rejections_answer(self.rejected),
        }


@dataclass(frozen=True)
class IngestReply:
    """The fate of each event of one body: rejected, or appended (offset; None = duplicate)."""

    request_id: int
    rejected: Sequence[Rejection]  # EncodedRejections from the worker process: no objects to unpickle
    appended: list[tuple[str, int | None]]  # (event_id, offset)
    head: int
    malformed: list[FieldError] | None = None  # the body as a whole could not be read
    failure: str | None = None  # the journal append failed (retry)
    too_many: tuple[int, int] | None = None  # (events, limit): the body holds too many events
    error: str | None = None  # this request could not be handled (a bug, logged); nothing kept
    fx_missing: dict[str, int] = field(default_factory=dict)  # events validated with no rate, by currency
    costly_s: float = 0.0  # validation beyond ordinary events' time, event by event
    validation_s: float = 0.0  # validation in all
    too_costly: int = 0  # events validated when its budget ran out (nothing kept)


class BodyWorker(Protocol):
    """Decodes and appends whole request bodies off the event loop (the embedded runtime's
    ingest worker process)."""

    async def submit(
        self,
        body: bytes,
        *,
        ndjson: bool,
        now: float,
        max_events: int,
        custom_types: frozenset[str],
        sources: frozenset[str] | None = None,
        fx: FxTable = REFERENCE_ONLY,
        budget_s: float | None = None,
    ) -> IngestReply: ...


class Appender(Protocol):
    """Where accepted events go: the embedded journal's group committer, or a Kafka producer."""

    async def append(self, events: list[Event]) -> list[int | None]:
        """Make ``events`` durable; each one's offset, or None for a known duplicate."""
        ...


def first_of_each(items: Iterable[T], event_of: Callable[[T], Event]) -> tuple[list[T], list[T]]:
    """``items`` split into the first of each event (by ``source`` and ``event_id``) and the
    repeats: an event a request holds twice is written once, and the repeat reported a
    duplicate (a retry in another request is the log's or the workers' to find)."""
    unique: list[T] = []
    repeats: list[T] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        event = event_of(item)
        key = (event.source, event.event_id)
        (repeats if key in seen else unique).append(item)
        seen.add(key)
    return unique, repeats


_DIRECTORIES = re.compile(r"(?<![\w.])/(?:[^\s/]+/)+")  # of an absolute path: what precedes its file name


def append_failed(why: str) -> OverloadedError:
    """What producers are answered when the journal append failed (503: retry): ``why`` with
    the directories of any path taken out (a re-test planted a link in the data dir, and every
    producer read the data dir's path); the log has it whole."""
    shown = _DIRECTORIES.sub("", why)
    return OverloadedError(f"the journal append failed, nothing of this request was kept: {shown}", 1)


def stopping() -> OverloadedError:
    """What an appender answers a request it will not write, as it stops (503: retry)."""
    return OverloadedError("ingest is stopping and did not take the events; retry", 1)


def settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[list[int | None]],
    result: list[int | None] | None = None,
    error: Exception | None = None,
) -> None:
    """Answer an appender's waiting ``future`` from its writer thread: once, and not at all if
    its event loop is gone (no one awaits it then)."""

    def now() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or [])

    with contextlib.suppress(RuntimeError):  # the loop closed
        loop.call_soon_threadsafe(now)


class ProducerShares:
    """The events each producer (an API key) sent lately, decayed with a half-life of
    :data:`SHARE_HALF_LIFE_S`: what backpressure shares out. One key flooding the log must not
    make every other producer's requests a 503, and one the processor keeps up with is never
    turned away. Used on the event loop's thread only.

    A producer's fair share is what it would get if :data:`DRAIN` of the events processed lately
    (``processed``: the process's total, sampled) were shared out max-min fairly: each key
    sending less than an equal share keeps what it sent, and the others split the rest. Against
    the mean of what keys sent, two keys flooding at once each stayed under 1.5 times it, and
    neither was turned away before the hard bound (in a re-test). Where nothing is processed in
    this process (the kafka runtime's ingest), :data:`OVER_SHARE` times the mean serves."""

    def __init__(self, clock: Clock, processed: Callable[[], float] = lambda: 0.0) -> None:
        self._clock = clock
        self._sent: dict[str, tuple[float, float]] = {}  # producer -> (events, as of)
        self._processed = processed
        self._served = (0.0, -math.inf)  # events processed lately, decayed, as of
        self._total = processed()  # the process's total when last sampled

    def _decayed(self, count: float, at: float, now: float) -> float:
        return float(count * 0.5 ** ((now - at) / SHARE_HALF_LIFE_S)) if math.isfinite(at) else 0.0

    def _now_of(self, producer: str, now: float) -> float:
        events, at = self._sent.get(producer, (0.0, now))
        return self._decayed(events, at, now)

    def _served_now(self, now: float) -> float:
        total = self._processed()
        served = self._decayed(*self._served, now) + max(0.0, total - self._total)
        self._served, self._total = (served, now), total
        return served

    def add(self, producer: str, events: int) -> None:
        now = self._clock.time()
        self._served_now(now)  # sampled as requests come, so what is processed is counted as it is
        self._sent[producer] = (self._now_of(producer, now) + events, now)
        if len(self._sent) > 64:  # forget those under an event: the dict holds the keys sending now
            self._sent = {p: (n, at) for p, (n, at) in self._sent.items() if self._now_of(p, now) >= 1}

    def over_share(self, producer: str, *, alone: bool = False) -> bool:
        """Whether ``producer`` sent more than its fair share; when it is the only one sending,
        never, or with ``alone`` more than :data:`DRAIN` of what was processed."""
        now = self._clock.time()
        recent = {p: self._now_of(p, now) for p in self._sent}
        sending = [n for n in recent.values() if n >= 1]  # a trickle of a producer counts: it is the one to let in
        if len(sending) <= 1 and not alone:
            return False
        served = self._served_now(now)
        if served <= 0 and len(sending) <= 1:
            return bool(sending) and recent.get(producer, 0.0) >= 1  # nothing processed: what it sent waits
        if served <= 0:
            return recent.get(producer, 0.0) > OVER_SHARE * sum(sending) / len(sending)
        return recent.get(producer, 0.0) > _fair_share(sending, DRAIN * served)


def _fair_share(sent: list[float], capacity: float) -> float:
    """The max-min fair share of ``capacity`` among producers that sent ``sent``: what those
    sending more than it each get (infinite if everyone sent less than the capacity shared)."""
    left, waiting = capacity, len(sent)
    for count in sorted(sent):
        share = left / waiting
        if count > share:
            return share
        left, waiting = left - count, waiting - 1
    return math.inf


class ValidationBudget:
    """Per producer (an API key), the validation time its events took beyond an ordinary
        event's (:data:`~ringfence.events.decode.ORDINARY_EVENT_S`), as a token bucket:
        :data:`COSTLY_RATE` of a second each second, :data:`COSTLY_BURST_S` at once. Validation is
        one queue for every producer (the ingest worker process, or ingest's thread), and text
        crafted to be slow to scan (escapes in layers, digits grouped like cards) costs a hundred
        times an ordinary event: without a bound, one key's few hundred events a second held every
        other producer's requests for minutes. A request may spend what its key has left, less what
        its key's other requests under way may (so a burst of them in parallel gets no more), at
        least :data:`COSTLY_FLOOR_S`; its validation stops there and nothing of it is kept. Times are
    CPU times, so a machine busy with other work makes no request costly. A key
        out of budget is answered 429 until it is back in it; ordinary traffic, at any rate, never
        spends any. Used on the event loop's thread only."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._spent: dict[str, tuple[float, float]] = {}  # producer -> (seconds owed, as of)
        self._reserved: dict[str, float] = {}  # producer -> what its requests under way may spend

    def _owed(self, producer: str, now: float) -> float:
        owed, at = self._spent.get(producer, (0.0, now))
        return max(0.0, owed - (now - at) * COSTLY_RATE)

    def reserve(self, producer: str) -> float:
        """What a request of ``producer`` may spend beyond ordinary events' time (hand it back
        with :meth:`release`); 429 (with Retry-After) if the key spent more than its burst."""
        owed = self._owed(producer, self._clock.time())
        if owed > COSTLY_BURST_S:
            raise self.refusal(math.ceil((owed - COSTLY_BURST_S) / COSTLY_RATE))
        reserved = self._reserved.get(producer, 0.0)
        allowance = max(COSTLY_FLOOR_S, COSTLY_BURST_S - owed - reserved)
        self._reserved[producer] = reserved + allowance
        return allowance

    def release(self, producer: str, allowance: float) -> None:
        left = self._reserved.get(producer, 0.0) - allowance
        if left > 1e-9:
            self._reserved[producer] = left
        else:
            self._reserved.pop(producer, None)

    @staticmethod
    def refusal(wait_s: float) -> RequestError:
        return RequestError(
            429,
            "validation_budget",
            "this key's events have lately been far slower to validate than ordinary events "
            "(text full of escapes or digit groups); send fewer of them, or plainer ones",
            {"retry_after": max(1, math.ceil(wait_s))},
        )

    def charge(self, producer: str, costly_s: float) -> None:
        """Charge ``producer`` a request's validation time beyond its events' ordinary time."""
        if costly_s <= 0:
            return
        now = self._clock.time()
        self._spent[producer] = (self._owed(producer, now) + costly_s, now)
        if len(self._spent) > 64:  # forget those that owe nothing: the dict holds the costly ones
            self._spent = {p: (o, at) for p, (o, at) in self._spent.items() if self._owed(p, now) > 0}


class IngestService:
    """Validates, checks backpressure, and appends through the group committer."""

    def __init__(
        self,
        committer: Appender,
        metrics: Metrics,
        clock: Clock,
        *,
        max_batch_events: int,
        max_lag_events: int,
        lag: Callable[[], int],
        lag_s: Callable[[], float] = lambda: 0.0,
        shortage: Callable[[], str | None] = lambda: None,
        custom_types: Callable[[], frozenset[str]] = frozenset,
        worker: BodyWorker | None = None,
        fx: Callable[[], FxTable] = lambda: REFERENCE_ONLY,
    ) -> None:
        self._committer = committer
        self._worker = worker
        self._metrics = metrics
        self._clock = clock
        self._max_batch = max_batch_events
        self._max_lag = max_lag_events
        self._lag = lag
        self._lag_s = lag_s
        self._shortage = shortage
        self._custom_types = custom_types
        self._fx = fx
        self._shares = ProducerShares(clock, metrics.processed)
        self._validation = ValidationBudget(clock)
        self.turns = Turns()

    def holding(self, producer: str) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """A place for a request of ``producer``, held while its body is read and ingested, and
        what to call with each part of the body as it arrives (:meth:`Turns.holding`)."""
        return self.turns.holding(producer)

    def stop_taking(self) -> None:
        """The server stops: requests waiting for their turn, and new ones, are answered 503
        (:func:`stopping`) at once; those in their turn are written and answered."""
        self.turns.stop(stopping)

    def check_capacity(self, producer: str = "") -> None:
        """Raise OverloadedError when the processor is too far behind (backpressure): past
        ``max_lag_events`` for every producer; past half of it, first for ``producer`` if it sent
        more than its share of late. Also for every producer while ``shortage`` names one (disk, memory)."""
        short = self._shortage()
        if short is not None:
            raise OverloadedError(short, RETRY_AFTER_S)
        lag = self._lag()
        if lag > self._max_lag:
            raise OverloadedError(
                f"the processor is more than {self._max_lag} events behind; retry later", RETRY_AFTER_S
            )
        behind_s = self._lag_s()
        if (behind_s > SOFT_LAG_S and self._shares.over_share(producer)) or (
            behind_s > MAX_WAIT_S and self._shares.over_share(producer, alone=True)
        ):
            raise OverloadedError(
                f"events wait {behind_s:.0f} s to be processed and this key sent more than its share of them; "
                "retry later",
                RETRY_AFTER_S,
            )
        if lag > SOFT_LAG * self._max_lag and self._shares.over_share(producer):
            raise OverloadedError(
                f"the processor is {lag} events behind and this key sent more than its share of them; retry later",
                RETRY_AFTER_S,
            )

    async def ingest(
        self,
        body: bytes,
        *,
        ndjson: bool,
        sources: frozenset[str] | None = None,
        producer: str = "",
        gone: Callable[[], Awaitable[None]] | None = None,
    ) -> IngestResult:
        """Validate ``body`` and append its valid events, in its producer's turn (:class:`Turns`);
        ``sources``: those the producer's key may write (None: any); ``producer``: its key, for
        its share of backpressure; ``gone``: returns once its client disconnects (awaited only
        while the request waits its turn). Raises MalformedBody
        (TooManyEvents), OverloadedError, ClientGone."""
        async with self.turns.turn(producer, len(body), gone):
            self.check_capacity(producer)  # in its turn: it may have waited while the processor fell behind
            return await self._budgeted(body, ndjson, sources, producer)

    async def _budgeted(self, body: bytes, ndjson: bool, sources: frozenset[str] | None, producer: str) -> IngestResult:
        allowance = self._validation.reserve(producer)
        try:
            result = await self._validated_and_appended(body, ndjson, sources, allowance)
        except TooCostly as exc:  # nothing of it was kept
            self._validation.charge(producer, exc.costly_s)
            self.turns.spent(producer, exc.costly_s + exc.events * ORDINARY_EVENT_S)  # about what it took
            raise ValidationBudget.refusal(exc.costly_s / COSTLY_RATE) from None
        finally:
            self._validation.release(producer, allowance)
        self._validation.charge(producer, result.costly_s)
        self.turns.spent(producer, result.validation_s)
        self._shares.add(producer, result.accepted)
        return result

    async def _validated_and_appended(
        self, body: bytes, ndjson: bool, sources: frozenset[str] | None, budget_s: float | None = None
    ) -> IngestResult:
        if self._worker is not None:
            return await self._ingest_in_worker(self._worker, body, ndjson, sources, budget_s)
        decode = functools.partial(
            decode_batch,
            body,
            ndjson=ndjson,
            now=self._clock.time(),
            max_events=self._max_batch,
            custom_types=self._custom_types(),
            sources=sources,
            fx=self._fx(),
            budget_s=budget_s,
        )

        # a large body takes the CPU for up to a second or two (invalid events, digits to scan
        # for card numbers): on a thread, the event loop still answers everyone else meanwhile
        def timed() -> tuple[DecodedBatch, float]:  # its CPU time, on the thread that validates
            started = time.thread_time()
            return decode(), time.thread_time() - started

        batch, spent = await asyncio.to_thread(timed) if len(body) >= OFF_LOOP_BYTES else timed()
        result = IngestResult(rejected=batch.rejected, costly_s=batch.costly_s, validation_s=spent)
        self._metrics.events_rejected.inc(len(batch.rejected))
        self._count_fx_missing(batch.fx_missing)
        if batch.events:
            await self.append(batch.events, result)
        return result

    async def _ingest_in_worker(
        self, worker: BodyWorker, body: bytes, ndjson: bool, sources: frozenset[str] | None, budget_s: float | None
    ) -> IngestResult:
        reply = await worker.submit(
            body,
            ndjson=ndjson,
            now=self._clock.time(),
            max_events=self._max_batch,
            custom_types=self._custom_types(),
            sources=sources,
            fx=self._fx(),
            budget_s=budget_s,
        )
        if reply.too_costly:
            raise TooCostly(reply.costly_s, reply.too_costly)
        if reply.too_many is not None:
            raise TooManyEvents(*reply.too_many)
        if reply.malformed is not None:
            raise MalformedBody(reply.malformed)
        if reply.error is not None:
            raise RequestError(500, "ingest_failed", reply.error)
        if reply.failure is not None:
            raise append_failed(reply.failure)
        result = IngestResult(rejected=reply.rejected, costly_s=reply.costly_s, validation_s=reply.validation_s)
        for event_id, offset in reply.appended:
            if offset is None:
                result.duplicates += 1
                result.duplicate_ids.append(event_id)
            else:
                result.accepted += 1
        self._count(result)
        self._count_fx_missing(reply.fx_missing)
        return result

    def _count_fx_missing(self, missing: dict[str, int]) -> None:
        for currency, count in missing.items():
            self._metrics.fx_missing.labels(currency).inc(count)

    def _count(self, result: IngestResult) -> None:
        self._metrics.events_rejected.inc(len(result.rejected))
        self._metrics.events_ingested.inc(result.accepted)
        self._metrics.events_duplicate.inc(result.duplicates)

    async def append(self, events: list[Event], result: IngestResult) -> None:
        """Append already-valid events and count them into ``result``."""
        unique, repeats = first_of_each(events, lambda event: event)
        try:
            offsets = await self._committer.append(unique)
        except StoreError as error:  # as the worker process says it: a 409 would tell producers to drop them
            log.error("journal append failed: %s", error)
            raise append_failed(str(error)) from error
        for event, offset in zip(unique, offsets, strict=True):
            if offset is None:
                result.duplicates += 1
                result.duplicate_ids.append(event.event_id)
            else:
                result.accepted += 1
        result.duplicates += len(repeats)
        result.duplicate_ids += [event.event_id for event in repeats]
        self._metrics.events_ingested.inc(result.accepted)
        self._metrics.events_duplicate.inc(result.duplicates)
