"""Poison in the kafka runtime (issue 15, item 1): a record the engine or the state codec
cannot handle no longer crash-loops its worker. It is quarantined into PostgreSQL, listed by
the api service, re-driven after a pack fix, and the records after it still alert. The poison
is a record another producer wrote to the events topic around ingest's checks (no event ingest
takes is poison: ``tests/api/test_attacks_quarantine.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ringfence.config import load_settings
from ringfence.runtimes.kafka.records import partition_for
from ringfence.runtimes.kafka.topics import client_config, topics_of
from tests.helpers.kafka import KafkaStack
from tests.helpers.quarantine import FIXED, KEPT, PACK, REFERENCE, YAML, alerted, poison_record, score


def produce_around_ingest(stack: KafkaStack, customer: str, event_id: str) -> None:
    """The poison record, keyed by its customer as ingest keys the events topic's records."""
    from confluent_kafka import Producer

    settings = load_settings(environ=stack.env)
    producer, topics, key = Producer(client_config(settings)), topics_of(settings), customer.encode()
    where = partition_for(key, topics.partitions)
    producer.produce(topics.events, poison_record(customer, event_id), key, partition=where)
    assert producer.flush(30) == 0


def wait_for(condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(1.0)


def test_a_poison_record_is_quarantined_and_the_worker_goes_on(kafka_stack: KafkaStack) -> None:
    pack = kafka_stack.workdir / "acme.yaml"
    pack.write_text(PACK.format(version="acme-1", of=KEPT))
    kafka_stack.env["RINGFENCE_RULE_PACK"] = str(pack)
    kafka_stack.env.update(REFERENCE)
    admin = kafka_stack.key("admin", "admin")
    key, ingest, api = kafka_stack.services("w1")
    worker = next(s for s in kafka_stack.running if s.name == "w1")
    with ingest.client(key) as c:
        answer = c.post("/v1/events", json=[score("cus_a", "k-1", 50, 1)])
        assert answer.status_code == 202, answer.text
        produce_around_ingest(kafka_stack, "cus_p", "k-poison")
        assert c.post("/v1/events", json=[score("cus_b", "k-2", 60, 1)]).status_code == 202

    wait_for(lambda: {"k-1", "k-2"} <= alerted(api, key))
    # the poison's partition is retried on its own: its row may come after the others' alerts
    wait_for(lambda: bool(kafka_stack.sql("SELECT 1 FROM quarantine")))
    assert worker.process.poll() is None, worker.log()[-3000:]  # no crash loop
    rows = kafka_stack.sql("SELECT event_id, stage, status, reason FROM quarantine")
    assert [(r[0], r[1], r[2]) for r in rows] == [("k-poison", "customer", "quarantined")]
    assert rows[0][3].startswith("OverflowError")
    assert "k-poison" not in alerted(api, key)

    with api.client(admin) as c:
        (entry,) = c.get("/v1/quarantine").json()["items"]
        assert entry["event_id"] == "k-poison"
        assert c.put("/v1/rules", content=PACK.format(version="acme-2", of=FIXED), headers=YAML).status_code == 200
    wait_for(lambda: "runs rule pack acme-2" in worker.log())  # a worker looks every 5 s, between batches
    with api.client(admin) as c:
        answer = c.post(f"/v1/quarantine/{entry['id']}/redrive")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "redriven"
    wait_for(lambda: "k-poison" in alerted(api, key))
    assert len(kafka_stack.sql("SELECT 1 FROM quarantine")) == 1
