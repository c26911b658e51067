"""Restoring a task reads its changelog partition against a real broker: every transaction
written before the restore began counts once it is committed, and one a dead worker left open
never counts (the broker aborts it after the transaction timeout)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ringfence.config import Settings, load_settings
from ringfence.engine.packed import pack_rows
from ringfence.runtimes.kafka.changelog import Entry, encode_entry, replay
from ringfence.runtimes.kafka.restore import read_changelogs
from ringfence.runtimes.kafka.topics import Topics, client_config, topics_of
from tests.helpers.kafka import KafkaStack

pytestmark = pytest.mark.integration


def transactional(settings: Settings, topics: Topics, name: str, timeout_ms: int = 10_000) -> Any:
    from confluent_kafka import Producer

    producer = Producer(
        client_config(settings, **{"transactional.id": f"{topics.prefix}-{name}", "transaction.timeout.ms": timeout_ms})
    )
    producer.init_transactions(30)
    return producer


def write(producer: Any, topic: str, seq: int, rows: dict[str, bytes], commit: bool = True) -> None:
    """A batch's changelog entry, in a transaction."""
    producer.begin_transaction()
    packed = pack_rows([("count#1", key, value) for key, value in rows.items()])
    producer.produce(topic, encode_entry(Entry(seq, [packed], len(rows))), partition=0)
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)


def read_in_background(settings: Settings, topics: Topics, changelog: str) -> tuple[threading.Thread, list[Any]]:
    """The restore's read on its own thread; what it returned, or raised, lands in the list."""
    out: list[Any] = []

    def read() -> None:
        try:
            out.append(replay(read_changelogs(settings, topics, [(changelog, 0)])[(changelog, 0)]).state_rows())
        except Exception as error:
            out.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    return reader, out


def test_a_transaction_open_when_the_restore_starts_counts_once_committed(kafka_stack: KafkaStack) -> None:
    settings = load_settings(environ=kafka_stack.env)
    topics = topics_of(settings)
    changelog = topics.changelog
    owner = transactional(settings, topics, "owner")
    write(owner, changelog, 1, {"a": b"1"})
    write(owner, changelog, 2, {"b": b"2"}, commit=False)  # the last batch: committing as the restore starts

    reader, out = read_in_background(settings, topics, changelog)
    time.sleep(1.5)
    assert reader.is_alive()  # it waits for the transaction rather than stop short of it
    owner.commit_transaction(30)
    reader.join(30)

    assert out == [{("count#1", "a"): b"1", ("count#1", "b"): b"2"}]


def test_a_transaction_a_dead_worker_left_open_never_counts(kafka_stack: KafkaStack) -> None:
    settings = load_settings(environ=kafka_stack.env)
    topics = topics_of(settings)
    changelog = topics.changelog
    write(transactional(settings, topics, "first"), changelog, 1, {"a": b"1"})
    dead = transactional(settings, topics, "dead", timeout_ms=2_000)
    write(dead, changelog, 2, {"a": b"9", "b": b"9"}, commit=False)  # then it is never heard of again

    started = time.monotonic()
    reader, out = read_in_background(settings, topics, changelog)
    reader.join(60)

    assert out == [{("count#1", "a"): b"1"}]
    assert time.monotonic() - started < 30  # the broker aborted it after its timeout


def test_kafka_init_copies_the_per_stage_changelogs_into_the_one_changelog_once(kafka_stack: KafkaStack) -> None:
    """A deployment upgraded from one changelog a stage keeps every task's state: ``kafka init``
    copies each stage's entries, in order and naming their stage, into the empty partitions of
    the one changelog, and copies nothing the second time."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    settings = load_settings(environ=kafka_stack.env)
    topics = topics_of(settings)
    old = {stage: topics.changelog_v2(stage) for stage in ("customer", "card_id", "join")}
    admin = AdminClient(client_config(settings))
    for future in admin.create_topics([NewTopic(t, topics.partitions, 1) for t in old.values()]).values():
        future.result(30)
    owner = transactional(settings, topics, "v2-worker")
    write(owner, old["customer"], 1, {"c1": b"1"})
    write(owner, old["card_id"], 1, {"k1": b"5"})
    write(owner, old["customer"], 2, {"c2": b"2"})
    write(owner, old["customer"], 3, {"c1": b"3"}, commit=False)  # a dead worker's: never counts
    owner.abort_transaction(30)

    worker = in_the_process_group(settings, topics)
    refused = kafka_stack.cli("kafka", "init", check=False)
    worker.close()
    ran = kafka_stack.cli("kafka", "init", check=False)
    again = kafka_stack.cli("kafka", "init").stdout

    assert refused.returncode != 0
    assert f"workers are in {topics.group('process')}: stop them" in refused.stderr
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert f"copied 3 entries of the per-stage changelogs (.changelog.STAGE.v2) into {topics.changelog}" in ran.stdout
    assert "copied" not in again
    entries = read_changelogs(settings, topics, [(topics.changelog, 0)])[(topics.changelog, 0)]
    assert sorted((e.stage, e.seq) for _, e in entries) == [("card_id", 1), ("customer", 1), ("customer", 2)]
    assert [e.seq for _, e in entries if e.stage == "customer"] == [1, 2]  # in order
    by_stage = {s: replay([(o, e) for o, e in entries if e.stage == s]).state_rows() for s in ("customer", "card_id")}
    assert by_stage == {
        "customer": {("count#1", "c1"): b"1", ("count#1", "c2"): b"2"},
        "card_id": {("count#1", "k1"): b"5"},
    }


def in_the_process_group(settings: Settings, topics: Topics) -> Any:
    """A consumer that joined the workers' group (as a running worker has)."""
    from confluent_kafka import Consumer

    joined: list[Any] = []
    consumer = Consumer(client_config(settings, **{"group.id": topics.group("process"), "session.timeout.ms": 6000}))
    consumer.subscribe([topics.events], on_assign=lambda _c, partitions: joined.append(partitions))
    deadline = time.monotonic() + 60
    while not joined:
        assert time.monotonic() < deadline, "the consumer did not join the group"
        consumer.poll(0.2)
    return consumer
