"""``ringfence simulate --kafka``: simulated bank traffic written into the kafka runtime's
topics as ``serve ingest`` writes it, processed by the workers and alerting, against a real
broker and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers.kafka import KafkaStack, kafka_records

pytestmark = pytest.mark.integration


def test_simulated_traffic_reaches_the_workers_through_the_ingest_path(kafka_stack: KafkaStack) -> None:
    key = kafka_stack.key("reader", "alerts:read")
    worker = kafka_stack.worker("w1")
    kafka_stack.start("dispatch", "dispatch")
    labels = kafka_stack.workdir / "labels.json"

    done = kafka_stack.cli(
        *("simulate", "--kafka", "--events", "3000", "--customers", "300", "--fraud-rate", "0.02"),
        *("--seed", "5", "--labels", str(labels)),
    )

    assert "3,000 events" in done.stdout, done.stdout + done.stderr
    assert json.loads(labels.read_text())  # scenarios were injected...
    deadline = time.monotonic() + 120
    while True:  # ...every event reached the workers, and the scenarios alerted
        read = kafka_records(worker.url, key).get(("read", "events"), 0.0)
        alerts = kafka_stack.sql("SELECT count(*) FROM alerts")[0][0]
        if read >= 3000 and alerts > 0:
            break
        assert time.monotonic() < deadline, f"{read} events read, {alerts} alerts"
        time.sleep(0.5)
    assert read == 3000  # each once
    # the stages' copies went as records of many events: far fewer records than events
    assert kafka_records(worker.url, key).get(("read", "stage"), 0.0) < 300


def test_events_ingest_refuses_are_named_and_a_bad_labels_path_is_found_first(kafka_stack: KafkaStack) -> None:
    refused = kafka_stack.cli(
        *("simulate", "--kafka", "--events", "20", "--start", "2100-01-01T00:00:00Z"), check=False
    )
    assert refused.returncode == 2
    assert "rejected 20 of the events, such as " in refused.stderr
    assert "occurred_at" in refused.stderr  # why, from the in-process ingest, which logs none
    unwritable = kafka_stack.cli(
        *("simulate", "--kafka", "--events", "20", "--labels", "/nonexistent/dir/labels.json"), check=False
    )
    assert unwritable.returncode == 1
    assert "No such file or directory: '/nonexistent/dir/labels.json'" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr  # checked before any event was sent, not after all of them
