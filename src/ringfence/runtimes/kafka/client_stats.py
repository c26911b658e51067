"""A Kafka client's requests to the brokers, counted in the service's metrics.

At a paced load the brokers' CPU follows the requests they serve, not the records or bytes
(docs/deploy.md, *Sizing*), and librdkafka sends a produce request per partition (it does not
gather a broker's partitions into one, as the Java client does): a transaction that writes
16 partitions is some 17 produce requests besides its transactional ones. librdkafka reports
its counts by request type in its statistics, every :data:`STATISTICS_INTERVAL_S`; this turns
them into ``ringfence_kafka_requests{client, request}``.
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
        self._reported: dict[str, int] = {}  # a client's totals by request type, as last reported

    def __call__(self, statistics: str) -> None:
        try:
            totals = requests_by_type(json.loads(statistics))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("kafka client %s: statistics not read (%s)", self.client, exc)
            return
        for request, total in totals.items():
            sent = total - self._reported.get(request, 0)
            if sent > 0:
                self.metrics.kafka_requests.labels(self.client, request).inc(sent)
        self._reported = totals


def requests_by_type(statistics: dict[str, Any]) -> dict[str, int]:
    """The requests a client sent since it started, by type, over all its brokers."""
    totals: dict[str, int] = {}
    for broker in statistics.get("brokers", {}).values():
        for request, count in (broker.get("req") or {}).items():
            if isinstance(count, int) and count > 0:
                totals[request] = totals.get(request, 0) + count
    return totals


def counted(metrics: Metrics | None, client: str) -> dict[str, Any]:
    """librdkafka settings that count ``client``'s requests in ``metrics`` (none without)."""
    if metrics is None:
        return {}
    return {"statistics.interval.ms": STATISTICS_INTERVAL_S * 1000, "stats_cb": RequestCounts(metrics, client)}
