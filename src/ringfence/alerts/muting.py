"""Whether an alert is muted, and why: silences, then inhibition rules (Alertmanager's
``Muter``), for every runtime.

A runtime supplies the active silences and, per inhibition rule, the firing alerts that
could be its sources (:class:`InhibitionSources`); the decision is made here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ringfence.alerts.config import InhibitRule
from ringfence.alerts.matchers import all_match
from ringfence.alerts.silences import Silence


def label_set(alert: Mapping[str, Any]) -> dict[str, str]:
    """What matchers see: the alert's labels and its main fields."""
    return {
        **alert["labels"],
        "rule_id": alert["rule_id"],
        "severity": alert["severity"],
        "audience": alert["audience"],
        "customer_id": alert["customer_id"] or "",
        "alert_id": alert["id"],
    }


class InhibitionSources(Protocol):
    """The firing (open or acknowledged) alerts, as label sets, that may inhibit ``labels``
    under ``rule``: at least every one whose ``rule.equal`` labels equal those of ``labels``
    (an adapter may narrow by any of them it can query, e.g. ``customer_id``)."""

    def __call__(self, rule: InhibitRule, labels: Mapping[str, str]) -> Iterable[Mapping[str, str]]: ...


def silenced_by(silences: Sequence[Silence], labels: Mapping[str, str], now: float) -> Silence | None:
    """The first active silence whose matchers all match ``labels``."""
    for silence in silences:
        if silence.active(now) and silence.matchers and all_match(silence.matchers, labels):
            return silence
    return None


def inhibited_by(
    rules: Sequence[InhibitRule], labels: Mapping[str, str], sources: InhibitionSources
) -> Mapping[str, str] | None:
    """The first firing alert that inhibits ``labels``: it matches a rule's source matchers,
    ``labels`` match its target matchers, and the two agree on every ``equal`` label."""
    for rule in rules:
        if not all_match(rule.target, labels):
            continue
        for source in sources(rule, labels):
            if source.get("alert_id") == labels.get("alert_id"):
                continue  # an alert never inhibits itself
            if all_match(rule.source, source) and all(source.get(k, "") == labels.get(k, "") for k in rule.equal):
                return source
    return None


def mute_reason(
    silences: Sequence[Silence],
    rules: Sequence[InhibitRule],
    labels: Mapping[str, str],
    sources: InhibitionSources,
    now: float,
) -> str | None:
    """Why an alert with ``labels`` is muted now, or None if it is not."""
    silence = silenced_by(silences, labels, now)
    if silence is not None:
        return f"silenced by {silence.id}"
    source = inhibited_by(rules, labels, sources)
    if source is not None:
        return f"inhibited by {source.get('alert_id', '')}"
    return None
