"""Detection quality of a rule pack on simulated traffic: recall, precision, false alerts
per 10,000 everyday events, and time to detect, per scenario; recall per typology; false
alerts per detection, and the share of customers alerted a day. :class:`SeedsReport` sums up
runs of several seeds: the mean and the worst.

Alerts are counted as the alert pipeline would open them: hits of one detection with one
dedup key form one alert until that key has been quiet for ``INCIDENT_GAP_S``. An alert is
false when no scenario's event raised it for a detection that scenario expects or allows
(nor one of the customer's everyday events amid the scenario's: ``Label.around``).
A notification to the customer (audience ``customer``) raised on an everyday event is no
false alert: what it says is a fact about the payment, not a suspicion (a large payment, a
card used abroad). It is counted apart (``notifications``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec

from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack
from ringfence.engine.rules import AlertSignal, Audience
from ringfence.events.decode import validate_event
from ringfence.simulate.population import BACKGROUND_SOURCES, HISTORY_SOURCE, Label
from ringfence.simulate.scenarios import TYPOLOGY

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
    false_alerts: int  # notifications to customers aside
    false_examples: dict[str, list[str]] = field(default_factory=dict)
    # scenarios injected but not scored: some of their events fell past the end of the stream
    unscored: dict[str, int] = field(default_factory=dict)
    customers_seen: int = 0  # in the run's own events (a dormant customer's old history aside)
    # customers an alert for a desk (fraud, aml, security, ops) names, each calendar day of event
    # time (the customer of the alert's first hit); and those a false alert names
    alerted_by_day: dict[int, int] = field(default_factory=dict)
    falsely_alerted_by_day: dict[int, int] = field(default_factory=dict)
    notifications: frozenset[str] = frozenset()  # the detections that notify the customer

    def typologies(self) -> dict[str, ScenarioResult]:
        """Recall by typology (``scenarios.TYPOLOGY``): its scenarios' counts pooled."""
        pooled: dict[str, ScenarioResult] = {}
        for name, result in self.scenarios.items():
            typology = TYPOLOGY.get(name, name)
            into = pooled.setdefault(typology, ScenarioResult(typology))
            into.injected += result.injected
            into.detected += result.detected
            into.ttd += result.ttd
        return dict(sorted(pooled.items()))

    @property
    def false_per_10k(self) -> float:
        return self.false_alerts / self.normal_events * 10_000 if self.normal_events else 0.0

    def false_per_10k_of(self, detection: str) -> float:
        """False alerts of ``detection`` per 10,000 everyday events (for a notification: those
        raised on everyday events)."""
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
                    **({"notification": True} if name in self.notifications else {}),
                }
                for name, total in sorted(self.alerts.items())
            },
            "typologies": {
                name: {"injected": r.injected, "detected": r.detected, "recall": round(r.recall, 4)}
                for name, r in self.typologies().items()
            },
            "scenarios": {
                name: {
                    "injected": r.injected,
                    "detected": r.detected,
                    "recall": round(r.recall, 4),
                    "precision": _rounded(self.precision(name)),
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
        lines += ["", "| typology | injected | detected | recall |", "|---|---:|---:|---:|"]
        for name, r in self.typologies().items():
            lines.append(f"| {name} | {r.injected} | {r.detected} | {r.recall:.3f} |")
        lines.append("")
        lines.append(
            f"{self.events:,} events ({self.normal_events:,} everyday), {sum(self.alerts.values()):,} alerts, "
            f"{self.false_alerts} false: {self.false_per_10k:.2f} false alerts per 10,000 everyday events "
            f"(notifications to customers aside). Evaluated in {self.seconds:.0f} s."
        )
        lines.append(
            f"Customers an alert for a desk names: {self.customers_alerted_per_day:.3%} of the "
            f"{self.customers_seen:,} a day; by a false alert: {self.customers_falsely_alerted_per_day:.3%} a day."
        )
        lines += ["", "| detection | alerts | false | false per 10,000 everyday events |", "|---|---:|---:|---:|"]
        for name, total in sorted(self.alerts.items()):
            false = total - self.true_alerts.get(name, 0)
            shown = f"{name} (notification)" if name in self.notifications else name
            lines.append(f"| {shown} | {total} | {false} | {self.false_per_10k_of(name):.2f} |")
        if self.unscored:
            lines.append("")
            by_scenario = ", ".join(f"{name} {count}" for name, count in sorted(self.unscored.items()))
            lines.append(
                f"{sum(self.unscored.values())} more injected scenarios were not scored: their events fell "
                f"past the end of the stream ({by_scenario})."
            )
        return "\n".join(lines)


def evaluate(events: Iterable[dict[str, Any]], labels: list[Label], pack: RulePack) -> Report:
    """Run ``events`` (dicts as producers send them) through ``pack`` and score the hits.

    ``labels`` may grow while ``events`` is consumed (a generator labels each scenario
    before yielding its events); it is read as it grows. Every event no label names is an
    everyday one, but for imported history and partner heartbeats (``BACKGROUND_SOURCES``).
    """
    started = time.perf_counter()
    engine = Engine(pack)
    encoder = msgspec.json.Encoder()
    label_of: dict[str, Label] = {}  # a scenario's own events
    amid: dict[str, Label] = {}  # everyday events amid a scenario's (Label.around)
    seen_ids: set[str] = set()
    indexed = 0
    detected: dict[int, float] = {}
    last_hit: dict[tuple[str, str], float] = {}
    incident_true: dict[tuple[str, str, float], bool] = {}
    first_event: dict[tuple[str, str, float], str] = {}
    open_incident: dict[tuple[str, str], float] = {}
    customers: set[str] = set()
    suspected: dict[tuple[str, str, float], str] = {}  # an alert for a desk: the customer it names
    outputs = [(rule.id, rule.output) for rule in pack.rules] + [(p.id, p.output) for p in pack.patterns]
    notifications = frozenset(name for name, output in outputs if output.audience == Audience.CUSTOMER)
    count = normal = 0

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
            label = label_of.get(event_id) or amid.get(event_id)
            if label is None or signal.rule_id not in (*label.expected, *label.also):
                continue
            incident_true[(*key, open_incident[key])] = True
            own = event_id in label_of
            if own and signal.rule_id in label.expected and id(label) not in detected:
                detected[id(label)] = max(0.0, t - label.started_at)

    last_time = -float("inf")
    for raw in events:
        count += 1
        seen_ids.add(raw["event_id"])
        while indexed < len(labels):
            for event_id in labels[indexed].event_ids:
                label_of[event_id] = labels[indexed]
            for event_id in labels[indexed].around:
                amid[event_id] = labels[indexed]
            indexed += 1
        normal += raw["event_id"] not in label_of and raw.get("source") not in BACKGROUND_SOURCES
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
    false = sum(1 for (rule_id, _, _), is_true in incident_true.items() if not is_true and rule_id not in notifications)
    examples: dict[str, list[str]] = defaultdict(list)
    for incident, is_true in incident_true.items():
        if not is_true and len(examples[incident[0]]) < MAX_EXAMPLES:
            examples[incident[0]].append(first_event[incident])
    return Report(
        count,
        normal,
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
        notifications,
    )


def _rounded(value: float) -> float | None:
    """``value`` to 4 places; None for NaN, which JSON has no word for."""
    return None if math.isnan(value) else round(value, 4)


def _by_day(named: dict[tuple[str, str, float], str]) -> dict[int, int]:
    """Distinct customers named, by calendar day (UTC) of the alert's first hit."""
    days: dict[int, set[str]] = defaultdict(set)
    for (_, _, t), customer in named.items():
        days[int(t // 86_400)].add(customer)
    return {day: len(names) for day, names in days.items()}


HELD_OUT_FROM = 1000  # seeds from here on are held out: no threshold of the default pack was chosen on them
RECALL_TARGET = 0.9  # on every typology, on held-out seeds
FALSE_TARGET = 5.0  # false alerts per 10,000 everyday events, overall


@dataclass
class SeedsReport:
    """One pack scored on the traffic of several seeds: each figure's mean, and its worst seed.

    Seeds below ``HELD_OUT_FROM`` are the tuning seeds (tests and development runs use them);
    a report on seeds from ``HELD_OUT_FROM`` on is held out from every choice of the pack.
    """

    reports: dict[int, Report]

    @property
    def split(self) -> str:
        held_out = [seed >= HELD_OUT_FROM for seed in self.reports]
        return "held-out" if all(held_out) else "tuning" if not any(held_out) else "mixed"

    def _recall(self, results: dict[int, dict[str, ScenarioResult]]) -> dict[str, dict[str, Any]]:
        names = sorted({name for by_name in results.values() for name in by_name})
        summary = {}
        for name in names:
            per_seed = {seed: by_name[name] for seed, by_name in results.items() if name in by_name}
            recalls = {seed: r.recall for seed, r in per_seed.items() if r.injected}
            worst = min(recalls, key=lambda seed: recalls[seed]) if recalls else None
            summary[name] = {
                "injected": sum(r.injected for r in per_seed.values()),
                "recall_mean": round(statistics.mean(recalls.values()), 4) if recalls else None,
                "recall_worst": round(recalls[worst], 4) if worst is not None else None,
                "worst_seed": worst,
            }
        return summary

    def scenarios(self) -> dict[str, dict[str, Any]]:
        return self._recall({seed: report.scenarios for seed, report in self.reports.items()})

    def typologies(self) -> dict[str, dict[str, Any]]:
        return self._recall({seed: report.typologies() for seed, report in self.reports.items()})

    def _spread(self, figure: Callable[[Report], float]) -> dict[str, float]:
        """``figure`` of each seed's report: its mean, and its worst (highest) seed's."""
        values = [figure(report) for report in self.reports.values()]
        return {"mean": round(statistics.mean(values), 5), "worst": round(max(values), 5)}

    def detections(self) -> dict[str, dict[str, float]]:
        names = sorted({name for report in self.reports.values() for name in report.alerts})
        return {name: self._spread(partial(Report.false_per_10k_of, detection=name)) for name in names}

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeds": sorted(self.reports),
            "split": self.split,
            "events_per_seed": [self.reports[seed].events for seed in sorted(self.reports)],
            "false_alerts_per_10k_normal": self._spread(lambda report: report.false_per_10k),
            "customers_alerted_per_day": self._spread(lambda report: report.customers_alerted_per_day),
            "customers_falsely_alerted_per_day": self._spread(lambda report: report.customers_falsely_alerted_per_day),
            "typologies": self.typologies(),
            "scenarios": self.scenarios(),
            "detections_false_per_10k_normal": self.detections(),
            "runs": {str(seed): report.to_dict() for seed, report in sorted(self.reports.items())},
        }

    def markdown(self) -> str:
        seeds = sorted(self.reports)
        lines = [
            f"Seeds {', '.join(map(str, seeds))} ({self.split}; seeds from {HELD_OUT_FROM} on are held out).",
            "",
            "| typology | injected | recall (mean) | recall (worst seed) | worst seed |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += _recall_rows(self.typologies(), RECALL_TARGET)
        lines += [
            "",
            "| scenario | injected | recall (mean) | recall (worst seed) | worst seed |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += _recall_rows(self.scenarios(), None)
        false = self._spread(lambda report: report.false_per_10k)
        falsely = self._spread(lambda report: report.customers_falsely_alerted_per_day)
        lines += [
            "",
            f"False alerts per 10,000 everyday events (notifications to customers aside): {false['mean']:.2f} mean, "
            f"{false['worst']:.2f} worst seed (target: at most {FALSE_TARGET:g}). Customers named by a false "
            f"alert: {falsely['mean']:.3%} a day mean, {falsely['worst']:.3%} worst seed.",
            "",
            "| detection | false per 10,000 everyday events (mean) | (worst seed) |",
            "|---|---:|---:|",
        ]
        notifications = frozenset().union(*(report.notifications for report in self.reports.values()))
        for name, spread in self.detections().items():
            shown = f"{name} (notification)" if name in notifications else name
            lines.append(f"| {shown} | {spread['mean']:.2f} | {spread['worst']:.2f} |")
        return "\n".join(lines)


def _recall_rows(summary: dict[str, dict[str, Any]], target: float | None) -> list[str]:
    rows = []
    for name, s in summary.items():
        if s["recall_mean"] is None:
            rows.append(f"| {name} | {s['injected']} | - | - | - |")
            continue
        below = " (below target)" if target is not None and s["recall_worst"] < target else ""
        recall = f"{s['recall_mean']:.3f} | {s['recall_worst']:.3f}{below}"
        rows.append(f"| {name} | {s['injected']} | {recall} | {s['worst_seed']} |")
    return rows
