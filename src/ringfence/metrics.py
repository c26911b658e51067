"""Prometheus metrics of one platform instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The metrics DESIGN §5 promises, and a few more."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_ingested = Counter("ringfence_events_ingested", "Events durably accepted", registry=r)
        self.events_duplicate = Counter("ringfence_events_duplicate", "Events already in the log", registry=r)
        self.events_rejected = Counter("ringfence_events_rejected", "Events that failed validation", registry=r)
        self.events_late = Counter("ringfence_events_late", "Events behind their partition's watermark", registry=r)
        self.events_processed = Counter("ringfence_events_processed", "Events run through the engine", registry=r)
        self.events_quarantined = Counter(
            "ringfence_events_quarantined", "Events the engine or state codec could not handle, set aside", registry=r
        )
        self.processor_lag = Gauge("ringfence_processor_lag_events", "Log head minus processed offset", registry=r)
        self.log_head = Gauge("ringfence_log_head_offset", "Highest offset in the log", registry=r)
        self.alerts = Counter("ringfence_alerts", "Alerts created", ["severity", "audience"], registry=r)
        self.rule_hits = Counter("ringfence_rule_hits", "Rule hits", ["rule_id", "mode"], registry=r)
        self.notifications = Counter(
            "ringfence_notifications", "Notification attempts", ["receiver", "outcome"], registry=r
        )
        self.ingest_to_alert = Histogram(
            "ringfence_ingest_to_alert_seconds",
            "From an event's durable arrival to its alert being queryable (an arriving event's hits; not a timer's)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fx_missing = Counter(
            "ringfence_fx_missing_rate_events",
            "Events validated with an amount in a currency the FX table has no rate for",
            ["currency"],
            registry=r,
        )
        self.fx_rates_stale = Gauge(
            "ringfence_fx_rates_stale", "Rates in the FX table older than fx_max_age_days", registry=r
        )
        self.engine_state_keys = Gauge("ringfence_engine_state_keys", "Feature states held", registry=r)
        self.state_restore = Histogram(
            "ringfence_state_restore_seconds",
            "Restoring moved partitions' state from their changelog (kafka runtime)",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.kafka_records = Counter(
            "ringfence_kafka_records",
            "Records a kafka process worker consumed (read) or committed (written), by topic kind",
            ["direction", "topic"],
            registry=r,
        )
        self.kafka_requests = Counter(
            "ringfence_kafka_requests",
            "Requests a kafka runtime service's clients sent the brokers, by client and request type "
            "(librdkafka's statistics, every 10 s)",
            ["client", "request"],
            registry=r,
        )
        self.http_requests = Counter(
            "ringfence_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )

    def processed(self) -> float:
        """Events this process ran through the engine, in all (0 where another process does)."""
        (family,) = self.events_processed.collect()
        return float(next(s.value for s in family.samples if s.name.endswith("_total")))

    def counters(self) -> list[tuple[str, dict[str, str], float]]:
        """Every counter's value per label set: (name as declared, labels, value)."""
        return [
            (family.name, sample.labels, sample.value)
            for family in self.registry.collect()
            if family.type == "counter"
            for sample in family.samples
            if sample.name == f"{family.name}_total"
        ]

    def stats(self) -> dict[str, float]:
        """This process's totals as ``/v1/stats`` names them (``fx_missing``: events validated
        in a currency without a rate)."""
        totals: dict[str, float] = dict.fromkeys(STATS, 0.0)
        for name, labels, value in self.counters():
            stat = _STAT_OF.get(name)
            if name == "ringfence_notifications":  # attempts, by outcome
                stat = _NOTIFICATION_STAT_OF.get(labels.get("outcome", ""))
            if stat is not None:
                totals[stat] += value
        return totals

    def render(self) -> bytes:
        return generate_latest(self.registry)


_STAT_OF = {
    "ringfence_events_ingested": "ingested",
    "ringfence_events_processed": "processed",
    "ringfence_events_rejected": "rejected",
    "ringfence_events_duplicate": "duplicates",
    "ringfence_events_late": "late",
    "ringfence_events_quarantined": "quarantined",
    "ringfence_alerts": "alerts",
    "ringfence_fx_missing_rate_events": "fx_missing",
}
_NOTIFICATION_STAT_OF = {
    "sent": "notifications_sent",
    "retry": "notification_failures",
    "failed": "notification_failures",
}
STATS = (*_STAT_OF.values(), *dict.fromkeys(_NOTIFICATION_STAT_OF.values()))
