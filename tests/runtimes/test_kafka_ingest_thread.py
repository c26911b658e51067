"""The kafka runtime's ingest thread: it outlives a batch that fails unexpectedly (issue 15,
item 2): that batch's requests are answered 503 and the next requests are served; and its
transactions begin no more often than ``kafka_commit_interval_ms`` (issue 18): the requests that
arrive meanwhile share the next one, and a request after a quiet spell does not wait."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from typing import Any

import pytest

from ringfence.config import Settings
from ringfence.errors import OverloadedError
from ringfence.events import validate_event
from ringfence.runtimes.ingest import settle
from ringfence.runtimes.kafka import ingest as kafka_ingest
from ringfence.testing import event


class StandInProducer:
    def __init__(self) -> None:
        self.polls = 0

    def poll(self, timeout: float) -> int:  # the loop serves its callbacks (statistics) when idle
        self.polls += 1
        return 0

    def flush(self, timeout: float) -> int:
        return 0


class FakeAppender(kafka_ingest.KafkaAppender):
    """The real thread loop over a stand-in producer: the first commit raises (if ``fail_first``),
    later ones succeed; each commit's time and request count are kept."""

    def __init__(
        self, interval_ms: int = 50, fail_first: bool = True, hold: threading.Event | None = None
    ) -> None:  # no broker: what the loop uses
        self.settings = Settings(kafka_commit_interval_ms=interval_ms)
        self.fail_first = fail_first
        self.hold = hold  # a commit waits for it
        self.committing = threading.Event()
        self.written: list[list[str]] = []  # each request's event ids, as committed
        self.batches: list[tuple[float, int]] = []
        self._requests = queue.Queue()
        self._stop = threading.Event()
        self.producers_made = 0
        self._producer = StandInProducer()
        self.commits = 0
        self._committing_since: float | None = None
        self._refused: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _new_producer(self) -> Any:
        self.producers_made += 1
        return StandInProducer()

    def _commit(self, batch: list[kafka_ingest.Taken]) -> None:
        self.commits += 1
        self._committing_since = time.monotonic()  # as the real one marks it
        self.committing.set()
        if self.hold is not None:
            assert self.hold.wait(10)
        self.batches.append((time.monotonic(), len(batch)))
        if self.commits == 1 and self.fail_first:
            raise TypeError("a bug in routing one event")
        for request in (taken.request for taken in batch):
            self.written.append([e.event_id for e in request.events])
            settle(request.loop, request.future, list(range(len(request.events))))


def test_an_unexpected_failure_fails_its_batch_and_the_thread_serves_the_next() -> None:
    appender = FakeAppender()
    one = [validate_event(json.dumps(event()).encode(), 2e9)]

    async def scenario() -> list[int | None]:
        with pytest.raises(OverloadedError, match="internal error"):
            await asyncio.wait_for(appender.append(one), 5)
        return await asyncio.wait_for(appender.append(one), 5)

    try:
        assert asyncio.run(scenario()) == [0]
        assert appender.producers_made == 1  # the failed transaction's producer was replaced
    finally:
        appender.close()


@pytest.mark.serial  # 0.5 s
def test_transactions_begin_an_interval_apart_and_the_requests_between_share_one() -> None:
    appender = FakeAppender(interval_ms=1000, fail_first=False)
    one = [validate_event(json.dumps(event()).encode(), 2e9)]

    async def scenario() -> tuple[float, float]:
        asked = time.monotonic()
        await asyncio.wait_for(appender.append(one), 5)  # the first after a quiet spell: at once
        answered = time.monotonic() - asked
        later = []
        for _ in range(4):  # within the interval after the first transaction began
            later.append(asyncio.ensure_future(appender.append(one)))
            await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(*later), 5)
        return answered, time.monotonic() - asked

    try:
        first_wait, all_in = asyncio.run(scenario())
        assert [size for _, size in appender.batches] == [1, 4]
        assert appender.batches[1][0] - appender.batches[0][0] >= 0.99
        assert first_wait < 0.5
        assert all_in < 3.0
    finally:
        appender.close()


@pytest.mark.parametrize("bound", ["events", "bytes"])
def test_a_transaction_holds_a_bounded_number_of_events_and_bytes_and_a_larger_request_alone(
    monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    """The brokers abort a transaction open longer than its timeout, with every request in it:
    many large requests at once must make several transactions, not one that never commits."""
    sizes = [2, 2, 1, 3, 7, 1, 2]  # events a request
    made = [validate_event(json.dumps(event(event_id=f"e-{i:02d}")).encode(), 2e9) for i in range(sum(sizes) + 1)]
    if bound == "events":
        monkeypatch.setattr(kafka_ingest, "MAX_EVENTS_PER_TRANSACTION", 5)
    else:  # room for any 5 of them, never 6 (their sizes differ by a byte or two)
        lengths = [len(kafka_ingest.encode_event(e)) for e in made]
        assert 6 * min(lengths) > 5 * max(lengths) + 2
        monkeypatch.setattr(kafka_ingest, "MAX_BYTES_PER_TRANSACTION", 5 * max(lengths) + 2)
    hold = threading.Event()
    appender = FakeAppender(interval_ms=200, fail_first=False, hold=hold)

    def request(n: int, at: int) -> list[Any]:
        return made[at : at + n] if at < 90 else made[-1:]

    async def scenario() -> None:
        first = asyncio.ensure_future(appender.append(request(1, 90)))
        await asyncio.to_thread(appender.committing.wait, 5)  # the rest queue behind its commit
        waiting, at = [], 0
        for n in sizes:
            waiting.append(asyncio.ensure_future(appender.append(request(n, at))))
            at += n
        await asyncio.sleep(0.1)
        hold.set()
        await asyncio.wait_for(asyncio.gather(first, *waiting), 10)

    try:
        asyncio.run(scenario())
    finally:
        appender.close()
    written = appender.written[1:]  # each request's events, in order of their transactions
    assert [len(r) for r in written] == sizes  # every request whole, in the order they came
    per_transaction = [size for _, size in appender.batches[1:]]
    assert per_transaction == [3, 1, 1, 2]  # 2+2+1 | 3 | 7 alone | 1+2
    assert sum(per_transaction) == len(sizes)


class RecordingProducer:
    """Takes a transaction's records and keeps their times."""

    def __init__(self) -> None:
        self.times: list[int] = []

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic: str, value: bytes, key: Any, *, timestamp: int, **_: Any) -> None:
        self.times.append(timestamp)

    def commit_transaction(self, _timeout: float) -> None:
        pass


def taken_as_ingest_does(request: kafka_ingest.Request) -> kafka_ingest.Taken:
    taken = kafka_ingest.KafkaAppender._take(request)
    assert taken is not None
    return taken


def threadless(producer: Any) -> kafka_ingest.KafkaAppender:
    """An appender whose transactions go to ``producer``: no broker, no thread (call ``_commit``)."""
    from ringfence.engine.pack import load_pack_file
    from ringfence.engine.stages import plan_stages
    from ringfence.runtimes.kafka.topics import topics_of

    appender = kafka_ingest.KafkaAppender.__new__(kafka_ingest.KafkaAppender)
    appender.settings = Settings(kafka_commit_interval_ms=50)
    appender.topics = topics_of(appender.settings)
    plan = plan_stages(load_pack_file(None))
    appender.plan = lambda: plan
    appender._keys = None
    appender._producer = producer
    appender._committing_since = None
    appender._refused = None
    appender._stop = threading.Event()
    return appender


@pytest.mark.parametrize(("waited_s", "counted_s"), [(0.02, 0.02), (120.0, 0.05)])
def test_a_records_time_is_when_its_request_arrived_but_never_over_an_interval_back(
    waited_s: float, counted_s: float
) -> None:
    """The workers' idle watermarks advance from records' times: a request held by a stalled
    commit must not date its events minutes back."""
    appender = threadless(producer := RecordingProducer())
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        one = [validate_event(json.dumps(event()).encode(), 2e9)]
        taken = time.time()
        appender._commit([taken_as_ingest_does(kafka_ingest.Request(one, future, loop, taken - waited_s))])
    finally:
        loop.close()
    assert producer.times
    for at in producer.times:
        assert taken - counted_s - 0.01 <= at / 1000 <= taken - counted_s + 0.5


def test_an_idle_thread_still_polls_its_producer_so_its_statistics_are_served() -> None:
    appender = FakeAppender()
    try:
        time.sleep(0.5)
        assert appender._producer.polls >= 2  # librdkafka holds each report until a poll
    finally:
        appender.close()


def test_requests_still_queued_when_ingest_closes_are_answered_503_and_later_ones_at_once() -> None:
    """The transaction under way is answered as it ends; what waited behind it is refused (the
    client retries elsewhere), never left without an answer."""
    hold = threading.Event()
    appender = FakeAppender(interval_ms=1000, fail_first=False, hold=hold)
    one = [validate_event(json.dumps(event()).encode(), 2e9)]

    async def scenario() -> None:
        first = asyncio.ensure_future(appender.append(one))
        await asyncio.to_thread(appender.committing.wait, 5)  # its transaction is under way
        queued = [asyncio.ensure_future(appender.append(one)) for _ in range(3)]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(asyncio.to_thread(appender.close))
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError, match="stopping"):
            await asyncio.wait_for(appender.append(one), 2)
        hold.set()
        assert await asyncio.wait_for(first, 5) == [0]
        for request in queued:
            with pytest.raises(OverloadedError, match="stopping"):
                await asyncio.wait_for(request, 5)
        await asyncio.wait_for(closing, 10)

    asyncio.run(scenario())
    assert appender.commits == 1


def test_an_event_a_request_holds_twice_is_written_once_and_reported_a_duplicate() -> None:
    from ringfence.clock import SystemClock
    from ringfence.metrics import Metrics
    from ringfence.runtimes.ingest import IngestResult, IngestService

    appender = FakeAppender(fail_first=False)
    first, other = (validate_event(json.dumps(event(event_id=i)).encode(), 2e9) for i in ("e-1", "e-2"))
    service = IngestService(appender, Metrics(), SystemClock(), max_batch_events=10, max_lag_events=10, lag=lambda: 0)
    result = IngestResult()
    try:
        asyncio.run(asyncio.wait_for(service.append([first, first, other, first], result), 5))
    finally:
        appender.close()
    assert (result.accepted, result.duplicates, result.duplicate_ids) == (2, 2, ["e-1", "e-1"])
    assert [size for _, size in appender.batches] == [1]
    assert appender.written == [["e-1", "e-2"]]


class FailingCommitProducer(RecordingProducer):
    """A transaction whose commit the brokers refuse, and whose abort waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def commit_transaction(self, _timeout: float) -> None:
        from confluent_kafka import KafkaError, KafkaException

        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out"))

    def abort_transaction(self, _timeout: float) -> None:
        assert self.release.wait(10)


def test_a_failed_transactions_requests_are_answered_before_its_abort_waits_on_the_brokers() -> None:
    appender = threadless(producer := FailingCommitProducer())
    one = [validate_event(json.dumps(event()).encode(), 2e9)]

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int | None]] = loop.create_future()
        committing = threading.Thread(
            target=appender._commit,
            args=([taken_as_ingest_does(kafka_ingest.Request(one, future, loop, time.time()))],),
        )
        began = time.monotonic()
        committing.start()
        with pytest.raises(OverloadedError, match="commit timed out"):
            await asyncio.wait_for(future, 5)
        answered = time.monotonic() - began
        producer.release.set()  # the abort ends only now
        await asyncio.to_thread(committing.join, 5)
        return answered

    assert asyncio.run(scenario()) < 2.0


def test_a_writer_thread_that_dies_answers_every_request_waiting_and_refuses_the_next() -> None:
    """A bug outside a transaction (a statistics callback raising from a poll) ends the thread:
    what waited, and what comes after, is answered 503 instead of waiting for ever."""

    class BrokenPoll(StandInProducer):
        def poll(self, timeout: float) -> int:
            raise ZeroDivisionError("a statistics callback's bug")

    appender = FakeAppender(fail_first=False)
    one = [validate_event(json.dumps(event()).encode(), 2e9)]
    appender._producer = BrokenPoll()  # the idle loop polls it: the thread dies
    appender._thread.join(5)
    assert not appender._thread.is_alive()
    assert not appender.alive  # the kafka platform's readiness follows it

    async def scenario() -> None:
        with pytest.raises(OverloadedError, match="stopping"):
            await asyncio.wait_for(appender.append(one), 2)

    asyncio.run(scenario())


@pytest.mark.serial  # 0.1 s
def test_while_a_transaction_waits_on_the_brokers_new_requests_are_answered_503_at_once_and_it_is_unready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a hostile test: with the broker paused, ingest said it was ready and held every
    request until the broker came back (up to 43 s), answering 202 then."""
    monkeypatch.setattr(kafka_ingest, "STALLED_S", 0.3)

    class StalledBrokers(RecordingProducer):
        """A commit that waits until the brokers are ``back``, and times out then."""

        def __init__(self) -> None:
            super().__init__()
            self.back = threading.Event()
            self.aborted = threading.Event()

        def commit_transaction(self, _timeout: float) -> None:
            from confluent_kafka import KafkaError, KafkaException

            assert self.back.wait(10)
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out"))

        def abort_transaction(self, _timeout: float) -> None:
            assert self.aborted.wait(10)  # the brokers still away: the abort waits on them too

    appender = threadless(producer := StalledBrokers())
    one = [validate_event(json.dumps(event()).encode(), 2e9)]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int | None]] = loop.create_future()
        committing = threading.Thread(
            target=appender._commit,
            args=([taken_as_ingest_does(kafka_ingest.Request(one, future, loop, time.time()))],),
        )
        committing.start()
        await asyncio.sleep(0.1)
        assert appender.trouble() is None  # waiting, but not long yet
        await asyncio.sleep(0.4)
        trouble = appender.trouble()
        assert trouble is not None
        assert "waited" in trouble
        began = time.monotonic()
        with pytest.raises(OverloadedError, match="waited"):
            await appender.append(one)
        assert time.monotonic() - began < 0.1  # at once, not when the brokers are back
        producer.back.set()  # the commit times out; its abort waits on the brokers in turn
        with pytest.raises(OverloadedError):
            await asyncio.wait_for(future, 5)
        with pytest.raises(OverloadedError, match="waited"):  # found by a re-test: held during the abort
            await appender.append(one)
        producer.aborted.set()
        await asyncio.to_thread(committing.join, 5)
        assert appender.trouble() is not None  # refused: unready until a transaction goes through
        assert "refused" in (appender.trouble() or "")

    asyncio.run(scenario())
