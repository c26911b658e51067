"""A Kafka client's requests to the brokers, counted in the service's metrics.

At a paced load the brokers' CPU follows the requests they serve, not the records or bytes
(docs/deploy.md, *Sizing*), and librdkafka sends a produce request per partition (it does not
gather a broker's partitions into one, as the Java client does): a transaction that writes
16 partitions makes at least 16 produce requests, besides its transactional ones. librdkafka reports
its counts by request type in its statistics, every :data:`STATISTICS_INTERVAL_S`; this turns
them into ``ringfence_kafka_requests{client, request}``: for ingest's producer, a process
worker's consumer and producer, and dispatch's consumer, the clients that carry the traffic.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ringfence.metrics import Metrics

log = logging.getLogger("ringfence.kafka.client_stats")

STATISTICS_INTERVAL_S = 10


class RequestCounts:
    """librdkafka's statistics callback (``stats_cb``) of one client: adds the requests sent
    since its previous report to ``metrics``. It never raises: librdkafka calls it from the
    client's poll, and a raise there would stop the service's loop."""

    def __init__(self, metrics: Metrics, client: str) -> None:
        self.metrics = metrics
        self.client = client
        # by (broker, request type), as last reported: per broker, so a broker that leaves the
        # client's metadata (and its report) takes none of the others' new requests with it
        self._reported: dict[tuple[str, str], int] = {}

    def __call__(self, statistics: str) -> None:
        try:
            totals = requests_by_broker(json.loads(statistics))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("kafka client %s: statistics not read (%s)", self.client, exc)
            return
        sent: dict[str, int] = {}
        for (broker, request), total in totals.items():
            before = self._reported.get((broker, request), 0)
            # a count below the last is a connection's counts started over: all of it is new
            sent[request] = sent.get(request, 0) + (total - before if total >= before else total)
        for request, n in sent.items():
            if n > 0:
                self.metrics.kafka_requests.labels(self.client, request).inc(n)
        self._reported = totals


def requests_by_broker(statistics: dict[str, Any]) -> dict[tuple[str, str], int]:
    """The requests a client sent each broker since it started, by type."""
    totals: dict[tuple[str, str], int] = {}
    for broker, stats in statistics.get("brokers", {}).items():
        for request, count in (stats.get("req") or {}).items():
            if isinstance(count, int) and count > 0:
                totals[(str(broker), str(request))] = count
    return totals


def counted(metrics: Metrics | None, client: str) -> dict[str, Any]:
    """librdkafka settings that count ``client``'s requests in ``metrics`` (none without). Only
    for a client its service polls all the time: librdkafka holds each report until a poll
    serves it, so a client polled only when asked would hold them without bound."""
    if metrics is None:
        return {}
    return {"statistics.interval.ms": STATISTICS_INTERVAL_S * 1000, "stats_cb": RequestCounts(metrics, client)}
