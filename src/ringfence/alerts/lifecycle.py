"""The decisions of an alert's life, for every runtime: which moves between its statuses
(:class:`~ringfence.alerts.model.AlertStatus`) people and muting make, and how a new hit of
its rule merges into its evidence.

Pure functions; each store adapter (SQLite/PostgreSQL in ``store/``, DynamoDB in
``runtimes/aws/``) persists what they decide and decides nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ringfence.alerts.model import Action, AlertStatus
from ringfence.clock import iso
from ringfence.engine.rules import AlertSignal
from ringfence.errors import Conflict

MAX_EVIDENCE_EVENTS = 50  # an alert keeps the latest this many evidence events
SYSTEM_ACTOR = "ringfence"  # the actor of the pipeline's own changes

# a new hit of the rule and dedup key joins an alert in one of these
ACTIVE = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, AlertStatus.SUPPRESSED)
# an alert in one of these inhibits others (a suppressed one does not)
FIRING = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)

_TRANSITIONS: dict[Action, tuple[tuple[AlertStatus, ...], AlertStatus]] = {
    Action.ACKNOWLEDGE: ((AlertStatus.OPEN,), AlertStatus.ACKNOWLEDGED),
    Action.RESOLVE: (ACTIVE, AlertStatus.RESOLVED),
}


def transition(action: Action, status: str) -> AlertStatus | None:
    """The status ``action`` moves an alert in ``status`` to, or None if it is there already
    (acknowledging an acknowledged alert changes nothing). Raises Conflict (409) otherwise."""
    allowed_from, to = _TRANSITIONS[action]
    if status == to:
        return None
    if status not in allowed_from:
        raise Conflict(f"cannot {action.value} an alert that is {status}")
    return to


def muted_status(status: str, *, muted: bool) -> AlertStatus | None:
    """The status an alert in ``status`` moves to now that it is (not) muted, or None if it
    stays: a muted open alert is suppressed, and opens again once nothing mutes it. A muted
    acknowledged alert stays acknowledged (someone is on it); a resolved one stays resolved."""
    if muted and status == AlertStatus.OPEN:
        return AlertStatus.SUPPRESSED
    if not muted and status == AlertStatus.SUPPRESSED:
        return AlertStatus.OPEN
    return None


def evidence_events(signal: AlertSignal) -> list[dict[str, Any]]:
    """The evidence a signal brings: the events related to the hit, then the event itself."""
    related = [
        {**e, "occurred_at": iso(e["occurred_at"]), "ingested_at": iso(e["ingested_at"])} for e in signal.related_events
    ]
    event: dict[str, Any] = {
        "event_id": signal.event_id,
        "type": signal.event_type,
        "offset": signal.offset,
        "occurred_at": iso(signal.occurred_at),
        "ingested_at": iso(signal.ingested_at),
        "late": signal.late,
        "features": signal.features,
    }
    if signal.fx is not None:  # the rate its money was compared at (its amounts in the reference currency)
        event["fx"] = signal.fx
    return [*related, event]


def new_evidence(signal: AlertSignal) -> dict[str, Any]:
    """The evidence of an alert a signal creates."""
    return {"events": evidence_events(signal)[-MAX_EVIDENCE_EVENTS:], "features": signal.features}


def merge_evidence(evidence: dict[str, Any], signal: AlertSignal) -> dict[str, Any]:
    """An active alert's evidence after another hit: the latest events, the latest features."""
    events = [*evidence.get("events", []), *evidence_events(signal)][-MAX_EVIDENCE_EVENTS:]
    return {**evidence, "events": events, "features": signal.features}


@dataclass(frozen=True)
class Hit:
    """What another hit changes in an active alert (besides count + 1 and its evidence)."""

    first_seen: float
    last_seen: float
    title: str
    summary: str


def another_hit(first_seen: float, last_seen: float, signal: AlertSignal) -> Hit:
    return Hit(min(first_seen, signal.occurred_at), max(last_seen, signal.occurred_at), signal.title, signal.summary)
