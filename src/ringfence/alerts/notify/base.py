"""What every receiver does: deliver one notification, and say whether a failure is worth retrying."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import httpx

from ringfence.alerts.notify.deadline import within


class Outcome(StrEnum):
    """Why a delivery attempt ended as it did (stored with the notification)."""

    SENT = "sent"
    RETRY = "retry"  # network error, 5xx, 429: try again later
    FAILED = "failed"  # the receiver refused it (4xx): retrying will not help


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None


class Notifier(Protocol):
    """Sends a notification payload; never raises for delivery failures."""

    name: str
    kind: str

    def send(self, payload: dict[str, Any], notification_id: str, now: float) -> Delivery: ...


def classify(response: httpx.Response) -> Delivery:
    """Map an HTTP answer to an outcome, honouring Retry-After on 429 and 503."""
    status = response.status_code
    if 200 <= status < 300:
        return Delivery(Outcome.SENT, f"HTTP {status}")
    retry_after = None
    header = response.headers.get("retry-after")
    if header is not None and header.strip().isdigit():
        retry_after = float(header)
    if status == 429 or status >= 500:
        return Delivery(Outcome.RETRY, f"HTTP {status}", retry_after)
    return Delivery(Outcome.FAILED, f"HTTP {status}: {response.text[:200]}")


def post_json(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Delivery:
    """POST ``body``; the whole send ends within ``timeout`` (a client of
    :func:`~ringfence.alerts.notify.deadline.receiver_client`), not only each read of it."""
    try:
        with within(timeout):
            response = client.post(
                url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=timeout
            )
    except httpx.HTTPError as exc:
        return Delivery(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
    return classify(response)
