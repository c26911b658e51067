"""Slack-compatible incoming webhooks: ``{"text": ..., "blocks": [...]}`` with mrkdwn sections."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from ringfence.alerts.config import SlackDoc
from ringfence.alerts.notify.base import Delivery, post_json

MAX_ALERTS_SHOWN = 10
ICON = {
    "critical": ":rotating_light:",
    "high": ":red_circle:",
    "medium": ":large_orange_circle:",
    "low": ":large_yellow_circle:",
    "info": ":information_source:",
}


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    alerts = payload["alerts"]
    status = payload["status"].upper()
    text = f"[{status}] {len(alerts)} alert(s): " + "; ".join(a["title"] for a in alerts[:3])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Ringfence: {status} ({len(alerts)})"[:150]}}
    ]
    for a in alerts[:MAX_ALERTS_SHOWN]:
        icon = ICON.get(a["severity"], "")
        line = f"{icon} *{a['title']}*\n{a['summary']}\n`{a['rule_id']}` · {a['status']} · {a['id']}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line[:3000]}})
    if len(alerts) > MAX_ALERTS_SHOWN:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {len(alerts) - MAX_ALERTS_SHOWN} more"}]}
        )
    return {"text": text[:3000], "blocks": blocks}


class SlackNotifier:
    kind = "slack"

    def __init__(self, name: str, options: SlackDoc, client: httpx.Client) -> None:
        self.name = name
        self._options = options
        self._client = client

    def send(self, payload: dict[str, Any], notification_id: str, now: float) -> Delivery:
        body = msgspec.json.encode(slack_message(payload))
        return post_json(self._client, self._options.address(), body, {}, self._options.timeout_s)
