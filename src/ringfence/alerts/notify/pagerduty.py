"""PagerDuty Events API v2-compatible: one event per alert, ``dedup_key`` = the alert id, so
trigger, acknowledge and resolve refer to one incident and a retried event is harmless."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from ringfence.alerts.config import PagerDutyDoc
from ringfence.alerts.notify.base import Delivery, Outcome, one_line, post_json
from ringfence.config import secret

SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info", "info": "info"}
ACTION = {"open": "trigger", "suppressed": "trigger", "acknowledged": "acknowledge", "resolved": "resolve"}


def pagerduty_event(alert: dict[str, Any], routing_key: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": ACTION[alert["status"]],
        "dedup_key": alert["id"],
    }
    if event["event_action"] == "trigger":
        event["payload"] = {
            "summary": one_line(alert["title"])[:1024],
            "source": "ringfence",
            "severity": SEVERITY[alert["severity"]],
            "timestamp": alert.get("last_seen") or datetime.now(UTC).isoformat(),
            "component": alert["rule_id"],
            "group": alert["audience"],
            "class": alert["labels"].get("category", alert["rule_id"]),
            "custom_details": {
                "summary": alert["summary"],
                "count": alert["count"],
                "customer_id": alert["customer_id"],
                "labels": alert["labels"],
            },
        }
    return event


def events_of(alert: dict[str, Any], routing_key: str) -> list[dict[str, Any]]:
    """The events telling PagerDuty of ``alert``. An acknowledged one is triggered first: its
    trigger may never have reached PagerDuty (superseded while it waited for a retry), and an
    acknowledge of no incident is dropped, where a trigger of an open incident only joins its log."""
    event = pagerduty_event(alert, routing_key)
    if event["event_action"] != "acknowledge":
        return [event]
    return [pagerduty_event({**alert, "status": "open"}, routing_key), event]


class PagerDutyNotifier:
    kind = "pagerduty"

    def __init__(self, name: str, options: PagerDutyDoc, client: httpx.Client) -> None:
        self.name = name
        self._options = options
        self._client = client
        self._routing_key = secret(options.routing_key_env)

    def send(self, payload: dict[str, Any], notification_id: str, now: float) -> Delivery:
        sent = 0
        for alert in payload["alerts"]:
            for event in events_of(alert, self._routing_key):
                body = msgspec.json.encode(event)
                result = post_json(self._client, self._options.url, body, {}, self._options.timeout_s)
                if result.outcome is not Outcome.SENT:
                    return result  # retried whole: dedup_key makes resent events harmless
                sent += 1
        return Delivery(Outcome.SENT, f"{sent} event(s)")
