"""A Kafka client's requests, from librdkafka's statistics to ``ringfence_kafka_requests``:
each report adds what was sent since the one before, broker by broker, and a
report that cannot be read is skipped without raising (librdkafka calls the callback from the
service's poll)."""

from __future__ import annotations

import json
import logging

import pytest

from ringfence.metrics import Metrics
from ringfence.runtimes.kafka.client_stats import RequestCounts, counted


def report(**brokers: dict[str, int]) -> str:
    return json.dumps({"name": "rdkafka#producer-1", "brokers": {name: {"req": req} for name, req in brokers.items()}})


def requests(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (labels["client"], labels["request"]): value
        for name, labels, value in metrics.counters()
        if name == "ringfence_kafka_requests"
    }


def test_each_report_adds_the_requests_sent_since_the_last_over_every_broker() -> None:
    metrics = Metrics()
    count = RequestCounts(metrics, "ingest.producer")

    count(report(a={"Produce": 10, "EndTxn": 2, "Fetch": 0}, b={"Produce": 5}))
    assert requests(metrics) == {("ingest.producer", "Produce"): 15.0, ("ingest.producer", "EndTxn"): 2.0}

    count(report(a={"Produce": 30, "EndTxn": 4}, b={"Produce": 5, "Metadata": 1}))
    assert requests(metrics) == {
        ("ingest.producer", "Produce"): 35.0,
        ("ingest.producer", "EndTxn"): 4.0,
        ("ingest.producer", "Metadata"): 1.0,
    }


def test_a_broker_gone_from_the_report_takes_none_of_the_others_new_requests_with_it() -> None:
    metrics = Metrics()
    count = RequestCounts(metrics, "process.producer")
    count(report(a={"Produce": 10}, b={"Produce": 5}))
    count(report(a={"Produce": 20}))  # b left the client's metadata
    assert requests(metrics) == {("process.producer", "Produce"): 25.0}
    count(report(a={"Produce": 3}))  # a's counts started over: all 3 are new
    assert requests(metrics) == {("process.producer", "Produce"): 28.0}


def test_a_report_that_cannot_be_read_is_skipped_and_the_next_counts_from_the_last_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    count = RequestCounts(metrics, "process.producer")
    count(report(a={"Produce": 7}))
    with caplog.at_level(logging.WARNING, "ringfence.kafka.client_stats"):
        count("{not json")
        count(json.dumps({"brokers": ["not", "a", "mapping"]}))
    assert "process.producer: statistics not read" in caplog.text
    count(report(a={"Produce": 9}))
    assert requests(metrics) == {("process.producer", "Produce"): 9.0}


def test_a_client_without_metrics_gets_no_statistics() -> None:
    assert counted(None, "ingest.producer") == {}
    settings = counted(Metrics(), "ingest.producer")
    assert settings["statistics.interval.ms"] == 10_000
    assert isinstance(settings["stats_cb"], RequestCounts)
