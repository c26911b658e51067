"""Slack-compatible incoming webhooks: ``{"text": ..., "blocks": [...]}`` with mrkdwn sections."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from ringfence.alerts.config import SlackDoc
from ringfence.alerts.notify.base import Delivery, one_line, post_json

MAX_ALERTS_SHOWN = 10
ICON = {
    "critical": ":rotating_light:",
    "high": ":red_circle:",
    "medium": ":large_orange_circle:",
    "low": ":large_yellow_circle:",
    "info": ":information_source:",
}


def _escaped(text: str) -> str:
    """A producer's text in Slack's mrkdwn: ``&``, ``<`` and ``>`` escaped, as Slack asks, so
    it makes no mention (``<!channel>``) and no link; control and bidi characters as spaces."""
    return one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """An alert's title and summary (a producer's text: ids, names) in plain-text sections,
    which Slack shows as they are (no bold, link or mention of theirs); Ringfence's own words
    (rule, status, alert id) in mrkdwn beside them."""
    alerts = payload["alerts"]
    status = payload["status"].upper()
    text = f"[{status}] {len(alerts)} alert(s): " + "; ".join(_escaped(a["title"]) for a in alerts[:3])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Ringfence: {status} ({len(alerts)})"[:150]}}
    ]
    for a in alerts[:MAX_ALERTS_SHOWN]:
        icon = ICON.get(a["severity"], "")
        shown = f"{icon} {one_line(a['title'])}\n{one_line(a['summary'])}"
        blocks.append({"type": "section", "text": {"type": "plain_text", "text": shown[:3000], "emoji": True}})
        ours = f"`{a['rule_id']}` · {a['status']} · {a['id']}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": ours[:3000]}]})
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
