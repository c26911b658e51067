"""Signed webhooks (also the bank's customer-notification service).

Each request carries ``X-Ringfence-Timestamp`` (Unix seconds) and ``X-Ringfence-Signature:
v1=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"`` under the shared secret. A receiver
recomputes it over the raw body, compares in constant time, and rejects timestamps older
than its replay window (5 minutes recommended); ``X-Ringfence-Notification-Id`` lets it
drop a notification it has already handled. :func:`verify` does all that.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import msgspec

from ringfence.alerts.config import WebhookDoc
from ringfence.alerts.notify.base import Delivery, post_json
from ringfence.config import secret

SIGNATURE_HEADER = "X-Ringfence-Signature"
TIMESTAMP_HEADER = "X-Ringfence-Timestamp"
ID_HEADER = "X-Ringfence-Notification-Id"
REPLAY_WINDOW_S = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return "v1=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, body: bytes, timestamp: str, signature: str, now: float, window_s: int = REPLAY_WINDOW_S
) -> bool:
    """True if ``signature`` is ours over ``body`` and ``timestamp`` is within the replay window."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > window_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


class WebhookNotifier:
    kind = "webhook"

    def __init__(self, name: str, options: WebhookDoc, client: httpx.Client) -> None:
        self.name = name
        self._options = options
        self._client = client
        self._secret = secret(options.secret_env).encode() if options.secret_env else None

    def send(self, payload: dict[str, Any], notification_id: str, now: float) -> Delivery:
        body = msgspec.json.encode(payload)
        headers = {ID_HEADER: notification_id}
        if self._secret is not None:
            timestamp = int(now)
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return post_json(self._client, self._options.address(), body, headers, self._options.timeout_s)
