"""Alerts as stored and served, their closed sets of statuses and reasons (enums whose values
are what is stored and shown), and the named reasons behind each pipeline decision."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypedDict

import msgspec

from ringfence.clock import iso


class AlertStatus(StrEnum):
    """Where an alert is in its life (see :mod:`~ringfence.alerts.lifecycle` for the moves)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    SUPPRESSED = "suppressed"  # muted by a silence or an inhibition


STATUSES = tuple(AlertStatus)  # what the API's ``status`` filter accepts


class Decision(StrEnum):
    """Why a signal did (not) become a new alert. Stored in alert history."""

    CREATED = "created"  # no active alert for this rule + dedup key
    DEDUPLICATED = "deduplicated"  # an active alert exists: count and last_seen updated
    SHADOW = "shadow"  # the rule is in shadow mode: hit counted, no alert


class Action(StrEnum):
    """Lifecycle actions people (or Ringfence) take on an alert."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class PipelineAction(StrEnum):
    """What the alert pipeline itself records in an alert's history."""

    SUPPRESS = "suppress"  # muted: open -> suppressed
    UNSUPPRESS = "unsuppress"  # no longer muted: suppressed -> open
    ROUTE = "route"  # joined a route's group
    NOTIFY = "notify"  # a notification of it was sent, or failed for good
    AUTO_RESOLVE = "auto-resolve"  # its rule had no new hit for the rule's quiet period


class AlertChange(StrEnum):
    """The kinds of entry in the pipeline's outbox: what happened to an alert."""

    FIRING = "firing"  # created or hit again
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class NotificationStatus(StrEnum):
    PENDING = "pending"  # due at ``next_attempt_at``
    SENT = "sent"
    DEAD = "dead"  # a dead letter until someone re-drives it
    SUPERSEDED = "superseded"  # a newer notification of its group, which carries what it told, went instead


class HistoryEntry(msgspec.Struct, omit_defaults=True):
    at: str
    actor: str
    action: str
    reason: str
    from_status: str | None = None
    to_status: str | None = None


class Comment(msgspec.Struct):
    at: str
    author: str
    text: str


SHOWN_ENTRIES = 100  # of an alert's history and of its comments, the newest shown (both grow without end)
# an alert's comments, at most: one analyst key's 16 connections added 150 a second of 4,000
# characters each, to one alert, bounded only by the rate limit (a hostile test)
MAX_COMMENTS = 1_000


class Alert(msgspec.Struct):
    """An alert as the API returns it (DESIGN §4, §5): its newest :data:`SHOWN_ENTRIES` history
    entries and comments, oldest first, and how many older ones are not shown."""

    id: str
    rule_id: str
    rule_version: str
    severity: str
    audience: str
    status: str  # an AlertStatus value
    customer_id: str | None
    dedup_key: str
    labels: dict[str, str]
    title: str
    summary: str
    evidence: dict[str, Any]
    first_seen: str
    last_seen: str
    created_at: str
    updated_at: str
    count: int
    assignee: str | None
    history: list[HistoryEntry]
    comments: list[Comment] = []
    history_omitted: int = 0
    comments_omitted: int = 0


class AlertSummary(TypedDict):
    """An alert as notifications and the live stream carry it (times in RFC 3339)."""

    id: str
    rule_id: str
    severity: str
    audience: str
    status: str
    customer_id: str | None
    labels: dict[str, str]
    title: str
    summary: str
    first_seen: str
    last_seen: str
    count: int


def alert_id(rule_id: str, dedup_key: str, occurrence: int) -> str:
    """The deterministic id of the ``occurrence``-th alert of a rule and dedup key."""
    digest = hashlib.sha256(f"{rule_id}\x1f{dedup_key}\x1f{occurrence}".encode()).hexdigest()
    return f"al_{digest[:24]}"


@dataclass(frozen=True)
class AlertQuery:
    """Filters for listing alerts; ``cursor`` is the opaque ``next_cursor`` of a previous page."""

    status: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    audience: tuple[str, ...] = ()
    rule_id: str | None = None
    customer_id: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class Notification:
    id: str
    group_key: str
    receiver: str
    status: NotificationStatus
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: float
    created_at: float
    sent_at: float | None
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group_key": self.group_key,
            "receiver": self.receiver,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "sent_at": iso(self.sent_at) if self.sent_at else None,
            "last_error": self.last_error,
            "alert_ids": [a["id"] for a in self.payload.get("alerts", [])],
        }
