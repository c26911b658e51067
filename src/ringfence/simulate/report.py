"""Detection quality of a rule pack on simulated traffic: recall, precision, false alerts
per 10,000 everyday events, and time to detect, per scenario; false alerts per detection, and
the share of customers alerted a day.

Alerts are counted as the alert pipeline would open them: hits of one detection with one
dedup key form one alert until that key has been quiet for ``INCIDENT_GAP_S``.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal
from ringfence.events.decode import validate_event
from ringfence.simulate.population import HISTORY_SOURCE, Label

INCIDENT_GAP_S = 3600.0
MAX_EXAMPLES = 5  # event ids of false alerts kept per detection, to look at


@dataclass
class ScenarioResult:
    scenario: str
    injected: int = 0
    detected: int = 0
    ttd: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.detected / self.injected if self.injected else float("nan")


def _daily_share(by_day: dict[int, int], customers: int) -> float:
    return statistics.mean(by_day.values()) / customers if by_day and customers else 0.0


@dataclass
class Report:
    events: int
    normal_events: int
    seconds: float
    scenarios: dict[str, ScenarioResult]
    alerts: dict[str, int]
    true_alerts: dict[str, int]
    false_alerts: int
    false_examples: dict[str, list[str]] = field(default_factory=dict)
    # scenarios injected but not scored: some of their events fell past the end of the stream
    unscored: dict[str, int] = field(default_factory=dict)
    customers_seen: int = 0  # in the run's own events (a dormant customer's old history aside)
    # customers an alert for a desk (fraud, aml, security, ops) names, each calendar day of event
    # time (the customer of the alert's first hit); and those a false alert names
    alerted_by_day: dict[int, int] = field(default_factory=dict)
    falsely_alerted_by_day: dict[int, int] = field(default_factory=dict)

    @property
    def false_per_10k(self) -> float:
        return self.false_alerts / self.normal_events * 10_000 if self.normal_events else 0.0

    def false_per_10k_of(self, detection: str) -> float:
        """False alerts of ``detection`` per 10,000 everyday events."""
        false = self.alerts.get(detection, 0) - self.true_alerts.get(detection, 0)
        return false / self.normal_events * 10_000 if self.normal_events else 0.0

    @property
    def customers_alerted_per_day(self) -> float:
        """The share of customers an alert for a desk names, a calendar day (the mean over the
        run's days; a run within one day is that day)."""
        return _daily_share(self.alerted_by_day, self.customers_seen)

    @property
    def customers_falsely_alerted_per_day(self) -> float:
        """As :attr:`customers_alerted_per_day`, for false alerts: the innocent customers a
        desk would look at."""
        return _daily_share(self.falsely_alerted_by_day, self.customers_seen)

    def precision(self, detection: str) -> float:
        total = self.alerts.get(detection, 0)
        return self.true_alerts.get(detection, 0) / total if total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "normal_events": self.normal_events,
            "seconds": round(self.seconds, 1),
            "false_alerts": self.false_alerts,
            "false_alerts_per_10k_normal": round(self.false_per_10k, 3),
            "false_examples": self.false_examples,
            "unscored": dict(sorted(self.unscored.items())),
            "customers_alerted_per_day": round(self.customers_alerted_per_day, 5),
            "customers_falsely_alerted_per_day": round(self.customers_falsely_alerted_per_day, 5),
            "detections": {
                name: {
                    "alerts": total,
                    "false": total - self.true_alerts.get(name, 0),
                    "false_per_10k_normal": round(self.false_per_10k_of(name), 3),
                }
                for name, total in sorted(self.alerts.items())
            },
            "scenarios": {
                name: {
                    "injected": r.injected,
                    "detected": r.detected,
                    "recall": round(r.recall, 4),
                    "precision": round(self.precision(name), 4),
                    "ttd_median_s": round(statistics.median(r.ttd), 1) if r.ttd else None,
                    "ttd_max_s": round(max(r.ttd), 1) if r.ttd else None,
                }
                for name, r in sorted(self.scenarios.items())
            },
        }

    def markdown(self) -> str:
        lines = [
            "| scenario | injected | detected | recall | precision | time to detect (median / max) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in sorted(self.scenarios.items()):
            ttd = f"{statistics.median(r.ttd):.0f} s / {max(r.ttd):.0f} s" if r.ttd else "-"
            lines.append(
                f"| {name} | {r.injected} | {r.detected} | {r.recall:.3f} | {self.precision(name):.3f} | {ttd} |"
            )
        lines.append("")
        lines.append(
            f"{self.events:,} events ({self.normal_events:,} everyday), {sum(self.alerts.values()):,} alerts, "
            f"{self.false_alerts} false: {self.false_per_10k:.2f} false alerts per 10,000 everyday events. "
            f"Evaluated in {self.seconds:.0f} s."
        )
        lines.append(
            f"Customers an alert for a desk names: {self.customers_alerted_per_day:.3%} of the "
            f"{self.customers_seen:,} a day; by a false alert: {self.customers_falsely_alerted_per_day:.3%} a day."
        )
        lines += ["", "| detection | alerts | false | false per 10,000 everyday events |", "|---|---:|---:|---:|"]
        for name, total in sorted(self.alerts.items()):
            false = total - self.true_alerts.get(name, 0)
            lines.append(f"| {name} | {total} | {false} | {self.false_per_10k_of(name):.2f} |")
        if self.unscored:
            lines.append("")
            by_scenario = ", ".join(f"{name} {count}" for name, count in sorted(self.unscored.items()))
            lines.append(
                f"{sum(self.unscored.values())} more injected scenarios were not scored: their events fell "
                f"past the end of the stream ({by_scenario})."
            )
        return "\n".join(lines)


def evaluate(events: Iterable[dict[str, Any]], labels: list[Label], pack: RulePack, normal_events: int) -> Report:
    """Run ``events`` (dicts as producers send them) through ``pack`` and score the hits.

    ``labels`` may grow while ``events`` is consumed (a generator labels each scenario
    before yielding its events); it is read as it grows.
    """
    started = time.perf_counter()
    engine = Engine(pack)
    encoder = msgspec.json.Encoder()
    label_of: dict[str, Label] = {}
    seen_ids: set[str] = set()
    indexed = 0
    detected: dict[int, float] = {}
    last_hit: dict[tuple[str, str], float] = {}
    incident_true: dict[tuple[str, str, float], bool] = {}
    first_event: dict[tuple[str, str, float], str] = {}
    open_incident: dict[tuple[str, str], float] = {}
    customers: set[str] = set()
    suspected: dict[tuple[str, str, float], str] = {}  # an alert for a desk: the customer it names
    count = 0

    def score(signal: AlertSignal) -> None:
        key = (signal.rule_id, signal.dedup_key)
        t = signal.occurred_at
        if key not in last_hit or t - last_hit[key] > INCIDENT_GAP_S:
            open_incident[key] = t
            incident_true[(*key, t)] = False
            first_event[(*key, t)] = signal.event_id
            if signal.customer_id is not None and signal.mode == "live" and signal.audience != "customer":
                suspected[(*key, t)] = signal.customer_id
        last_hit[key] = max(t, last_hit.get(key, t))
        ids = [signal.event_id, *(e["event_id"] for e in signal.related_events)]
        for event_id in ids:
            label = label_of.get(event_id)
            if label is None or signal.rule_id not in (*label.expected, *label.also):
                continue
            incident_true[(*key, open_incident[key])] = True
            if signal.rule_id in label.expected and id(label) not in detected:
                detected[id(label)] = max(0.0, t - label.started_at)

    last_time = -float("inf")
    for raw in events:
        count += 1
        seen_ids.add(raw["event_id"])
        while indexed < len(labels):
            for event_id in labels[indexed].event_ids:
                label_of[event_id] = labels[indexed]
            indexed += 1
        event = validate_event(encoder.encode(raw), now=float("inf"), custom_types=pack.custom_types)
        last_time = max(last_time, event.occurred_at)
        if event.customer_id is not None and event.source != HISTORY_SOURCE:  # not a dormant one's history
            customers.add(event.customer_id)
        for signal in engine.process(event, count, 0, event.occurred_at):
            score(signal)
    # a scenario still unfolding when the stream ended is not scored
    complete = [label for label in labels if label.ends_at <= last_time and all(e in seen_ids for e in label.event_ids)]
    results = {label.scenario: ScenarioResult(label.scenario) for label in complete}
    unscored = Counter(label.scenario for label in labels) - Counter(label.scenario for label in complete)
    for label in complete:
        result = results[label.scenario]
        result.injected += 1
        if id(label) in detected:
            result.detected += 1
            result.ttd.append(detected[id(label)])
    alerts: dict[str, int] = defaultdict(int)
    true_alerts: dict[str, int] = defaultdict(int)
    for (rule_id, _, _), is_true in incident_true.items():
        alerts[rule_id] += 1
        true_alerts[rule_id] += is_true
    false = sum(1 for is_true in incident_true.values() if not is_true)
    examples: dict[str, list[str]] = defaultdict(list)
    for incident, is_true in incident_true.items():
        if not is_true and len(examples[incident[0]]) < MAX_EXAMPLES:
            examples[incident[0]].append(first_event[incident])
    return Report(
        count,
        normal_events,
        time.perf_counter() - started,
        results,
        dict(alerts),
        dict(true_alerts),
        false,
        dict(examples),
        dict(unscored),
        len(customers),
        _by_day(suspected),
        _by_day({incident: c for incident, c in suspected.items() if not incident_true[incident]}),
    )


def _by_day(named: dict[tuple[str, str, float], str]) -> dict[int, int]:
    """Distinct customers named, by calendar day (UTC) of the alert's first hit."""
    days: dict[int, set[str]] = defaultdict(set)
    for (_, _, t), customer in named.items():
        days[int(t // 86_400)].add(customer)
    return {day: len(names) for day, names in days.items()}
