"""The requests the kafka runtime's clients send the broker, in the services' metrics
(``ringfence_kafka_requests``): at a paced load the broker's CPU follows them, so an operator
sizing a cluster reads them there. Against a real broker: ingest's producer and a worker's
producer and consumer report what they sent, transactions included."""

from __future__ import annotations

import time

import httpx
import pytest

from ringfence import testing
from tests.helpers.http import post_batch
from tests.helpers.kafka import KafkaStack, kafka_requests

pytestmark = pytest.mark.integration


def test_ingest_and_a_worker_count_their_requests_to_the_broker_by_type(kafka_stack: KafkaStack) -> None:
    key, ingest, _ = kafka_stack.services("w1")
    worker = kafka_stack.workers[0]
    events = [testing.event(customer_id=f"c{i % 20}", event_id=f"e{i}") for i in range(200)]
    for at in range(0, len(events), 50):
        post_batch(ingest, key, events[at : at + 50])

    wanted = {
        ingest.url: {
            ("ingest.producer", "Produce"),
            ("ingest.producer", "AddPartitionsToTxn"),
            ("ingest.producer", "EndTxn"),
        },
        worker.url: {
            ("process.consumer", "Fetch"),
            ("process.producer", "Produce"),
            ("process.producer", "TxnOffsetCommit"),
            ("process.producer", "EndTxn"),
        },
    }
    deadline = time.monotonic() + 60  # librdkafka reports every 10 s
    while True:
        try:
            seen = {url: kafka_requests(url, key) for url in wanted}
        except httpx.ConnectError:  # the worker's metrics server is not up yet
            seen = {url: {} for url in wanted}
        missing = {url: labels - {k for k, n in seen[url].items() if n > 0} for url, labels in wanted.items()}
        if not any(missing.values()) and seen[ingest.url][("ingest.producer", "EndTxn")] >= 4:
            break
        assert time.monotonic() < deadline, f"not counted: {missing}, {seen}"
        time.sleep(1)
    # four requests one after another, each in a transaction of its own (a retried EndTxn counts
    # again), and a produce request per partition each transaction wrote
    ingested = seen[ingest.url]
    assert ingested[("ingest.producer", "EndTxn")] <= 8
    assert ingested[("ingest.producer", "Produce")] >= 2 * ingested[("ingest.producer", "EndTxn")]
    assert not any(client.startswith("ingest") for client, _ in seen[worker.url])
