"""What every receiver does: deliver one notification, and say whether a failure is worth retrying."""

from __future__ import annotations

import email.utils
import time
import unicodedata
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


MAX_ANSWER_BYTES = 4096  # of a receiver's answer, what is read (its start names a refusal)


def one_line(text: str) -> str:
    """Text of a producer's event shown to people (Slack, email, PagerDuty): control and format
    characters and every separator but the space (line breaks, U+2028, bidi overrides that show
    ``cus_42`` for ``24_suc``) as spaces."""
    return "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)


def retry_after_s(header: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` asks for: ASCII digits, or an HTTP date; None for anything
    else, a date past or a negative number (the retry policy's backoff then applies)."""
    if header is None:
        return None
    text = header.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    wait = when.timestamp() - now
    return wait if wait > 0 else None


def classify(status: int, headers: httpx.Headers, start: bytes, now: float) -> Delivery:
    """Map an HTTP answer (its status, headers and the start of its body) to an outcome,
    honouring Retry-After on 429 and 5xx."""
    if 200 <= status < 300:
        return Delivery(Outcome.SENT, f"HTTP {status}")
    if status == 429 or status >= 500:
        return Delivery(Outcome.RETRY, f"HTTP {status}", retry_after_s(headers.get("retry-after"), now))
    # as text a store keeps (no NUL: PostgreSQL refuses it) and people read: a body may be anything
    return Delivery(Outcome.FAILED, f"HTTP {status}: {one_line(start[:800].decode('utf-8', 'replace'))[:200]}")


def post_json(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Delivery:
    """POST ``body``; the whole send ends within ``timeout`` (a client of
    :func:`~ringfence.alerts.notify.deadline.receiver_client`), not only each read of it. Of the
    answer, at most :data:`MAX_ANSWER_BYTES` are read, as they came (never decompressed: a
    receiver's 3 MB of gzip held 3 GB), and none of a 2xx."""
    sent = {"Content-Type": "application/json", "Accept-Encoding": "identity", **headers}
    try:
        with within(timeout), client.stream("POST", url, content=body, headers=sent, timeout=timeout) as response:
            start = b""
            if not 200 <= response.status_code < 300:
                for chunk in response.iter_raw():
                    start += chunk
                    if len(start) >= MAX_ANSWER_BYTES:
                        break
            return classify(response.status_code, response.headers, start[:MAX_ANSWER_BYTES], time.time())
    except httpx.HTTPError as exc:
        return Delivery(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
