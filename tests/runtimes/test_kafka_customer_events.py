"""The kafka api's search for a customer's recent events in their partition of the events
topic: newest first, backwards a chunk at a time, bounded in offsets and time, a few at a time."""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from ringfence.errors import RequestError
from ringfence.runtimes.kafka import platform
from ringfence.runtimes.kafka.platform import KafkaLog
from ringfence.runtimes.kafka.records import global_offset, partition_for
from ringfence.runtimes.kafka.topics import Topics
from tests.helpers.fake_kafka import Consumer

PARTITIONS = 4


def event(customer: str, n: int) -> tuple[int, int, bytes, bytes]:
    body = msgspec.json.encode({"event_id": f"{customer}-{n}", "customer_id": customer})
    return (n, n, customer.encode(), body)


def log_over(records: list[tuple[int, int, bytes, bytes]], partition: int) -> KafkaLog:
    """A KafkaLog whose scanner reads ``records`` as ``partition`` of the events topic."""
    log = object.__new__(KafkaLog)
    log.topics = Topics("t", PARTITIONS)
    log._scanners = queue.Queue()
    for _ in range(platform.SCANNERS):
        log._scanners.put(Consumer({p: records if p == partition else [] for p in range(PARTITIONS)}))
    return log


@contextlib.contextmanager
def others_searching(log: KafkaLog, count: int) -> Iterator[None]:
    """``count`` of the log's scanners busy with others' searches meanwhile."""
    taken = [log._scanners.get_nowait() for _ in range(count)]
    try:
        yield
    finally:
        for scanner in taken:
            log._scanners.put(scanner)


def ids(found: list[Any]) -> list[str]:
    return [msgspec.json.decode(r.body)["event_id"] for r in found]


def test_the_newest_are_found_first_across_chunks_and_others_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "SCAN_CHUNK", 10)
    p = partition_for(b"alice", PARTITIONS)
    # alice's events far apart among another customer's, and one that names alice in its key only
    records = [event("alice" if n % 7 == 0 else "bob", n) for n in range(0, 60)]
    records[14] = (14, 14, b"alice", msgspec.json.encode({"event_id": "x", "customer_id": "mallory"}))
    found, searched_from = log_over(records, p).recent_of_customer("alice", 5, 1_000)
    assert ids(found) == ["alice-56", "alice-49", "alice-42", "alice-35", "alice-28"]
    assert searched_from == global_offset(p, 21)  # it stopped after the chunk that filled the answer (21-30)
    everything, searched_from = log_over(records, p).recent_of_customer("alice", 100, 1_000)
    assert ids(everything) == [f"alice-{n}" for n in range(56, -1, -7) if n != 14]
    assert searched_from == global_offset(p, 0)


def test_the_search_goes_back_no_further_than_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "SCAN_CHUNK", 10)
    p = partition_for(b"alice", PARTITIONS)
    records = [event("alice", n) for n in range(50)]
    found, searched_from = log_over(records, p).recent_of_customer("alice", 100, 25)
    # the partition ends at 51 (a marker after the last record): the latest 25 offsets are 26-50
    assert ids(found) == [f"alice-{n}" for n in range(49, 25, -1)]
    assert searched_from == global_offset(p, 26)


def test_a_search_past_its_time_answers_what_it_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "SCAN_CHUNK", 10)
    monkeypatch.setattr(platform, "SCAN_S", 0.0)
    p = partition_for(b"alice", PARTITIONS)
    found, searched_from = log_over([event("alice", n) for n in range(50)], p).recent_of_customer("alice", 100, 1_000)
    assert found == []
    assert searched_from == global_offset(p, 51)  # nothing searched, and it says so


def test_a_search_while_every_scanner_is_busy_waits_then_is_told_to_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "SCAN_S", 0.05)
    log = log_over([], 0)
    with others_searching(log, platform.SCANNERS), pytest.raises(RequestError) as busy:
        log.recent_of_customer("alice", 5, 1_000)
    assert (busy.value.status, busy.value.details) == (503, {"retry_after": 1})


def test_one_search_under_way_holds_up_no_other() -> None:
    """One key looping over customers who are not there (5 s each) held the one scanner: every
    other analyst's search was a 503 (a hostile test of the kafka runtime)."""
    p = partition_for(b"alice", PARTITIONS)
    log = log_over([event("alice", n) for n in range(5)], p)
    with others_searching(log, 1):
        found, _ = log.recent_of_customer("alice", 5, 1_000)
    assert ids(found) == [f"alice-{n}" for n in range(4, -1, -1)]


def test_brokers_that_fail_the_search_are_a_503_not_an_empty_answer() -> None:
    p = partition_for(b"alice", PARTITIONS)
    log = log_over([event("alice", n) for n in range(5)], p)
    for scanner in list(log._scanners.queue):
        scanner.fail = p
    with pytest.raises(RequestError) as failed:
        log.recent_of_customer("alice", 5, 1_000)
    assert failed.value.status == 503
    assert log._scanners.qsize() == platform.SCANNERS  # the scanner given back


@pytest.mark.serial  # 1.5 s
def test_a_search_while_others_run_is_turned_away_at_once_not_after_holding_a_thread() -> None:
    """Each waiting search holds one of the API's threads: 60 of them took every thread from
    every other request for 5 s each."""
    log = log_over([event("alice", 0)], partition_for(b"alice", PARTITIONS))
    with others_searching(log, platform.SCANNERS):
        began = time.monotonic()
        with pytest.raises(RequestError, match="searched for others") as refused:
            log.recent_of_customer("alice", 5, 1_000)
        waited = time.monotonic() - began
    assert refused.value.status == 503
    assert waited < 1.5
