"""Receivers: signed webhook, email, Slack- and PagerDuty-compatible."""

from __future__ import annotations

import httpx

from ringfence.alerts.config import AlertingConfig, Receiver, ReceiverKind
from ringfence.alerts.notify.base import Delivery, Notifier, Outcome
from ringfence.alerts.notify.email import EmailNotifier
from ringfence.alerts.notify.pagerduty import PagerDutyNotifier
from ringfence.alerts.notify.slack import SlackNotifier
from ringfence.alerts.notify.webhook import WebhookNotifier


def notifier_for(receiver: Receiver, client: httpx.Client) -> Notifier | None:
    """The notifier of ``receiver`` (None for the dashboard, which only streams)."""
    if receiver.kind is ReceiverKind.WEBHOOK:
        return WebhookNotifier(receiver.name, receiver.options, client)
    if receiver.kind is ReceiverKind.SLACK:
        return SlackNotifier(receiver.name, receiver.options, client)
    if receiver.kind is ReceiverKind.PAGERDUTY:
        return PagerDutyNotifier(receiver.name, receiver.options, client)
    if receiver.kind is ReceiverKind.EMAIL:
        return EmailNotifier(receiver.name, receiver.options)
    return None


def notifiers_of(config: AlertingConfig, client: httpx.Client) -> dict[str, Notifier]:
    """The notifier of each receiver of ``config`` that sends (the dashboard does not)."""
    found = {name: notifier_for(receiver, client) for name, receiver in config.receivers.items()}
    return {name: notifier for name, notifier in found.items() if notifier is not None}


__all__ = ["Delivery", "Notifier", "Outcome", "notifier_for", "notifiers_of"]
