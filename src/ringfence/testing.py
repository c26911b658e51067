"""Helpers for users' own tests of their rule packs and producers.

``FixedClock`` makes time explicit; ``event`` builds a valid v1 event with defaults, as a
producer sends it. They depend on nothing above the engine.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from ringfence.clock import iso

_ids = itertools.count(1)


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def event(
    type_: str = "card.authorization",
    *,
    at: float | None = None,
    customer_id: str | None = "cus_1",
    source: str = "test",
    event_id: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A valid v1 event as a producer sends it; ``data`` overrides the type's defaults."""
    defaults: dict[str, dict[str, Any]] = {
        "card.authorization": {
            "card_id": "tok_1",
            "amount": "12.50",
            "currency": "EUR",
            "merchant": {"id": "mer_1", "mcc": "5411", "country": "FR"},
            "channel": "pos",
            "approved": True,
        },
        "login.succeeded": {"device_id": "dev_1", "ip": "192.0.2.1"},
        "login.failed": {"device_id": "dev_1", "ip": "192.0.2.1"},
        "transfer.initiated": {"amount": "100.00", "currency": "EUR", "payee_id": "pay_1"},
        "balance.updated": {"balance": "500.00", "currency": "EUR"},
        "deposit.received": {"amount": "100.00", "currency": "EUR", "method": "transfer"},
        "payee.added": {"payee_id": "pay_1", "payee_country": "GB"},
        "api.request": {"service": "payments", "endpoint": "/transfers", "status": 200, "latency_ms": 12.0},
    }
    body: dict[str, Any] = {
        "event_id": event_id or f"evt-{next(_ids):09d}",
        "type": type_,
        "occurred_at": iso(at if at is not None else time.time()),
        "source": source,
        "data": {**defaults.get(type_, {}), **data},
    }
    if customer_id is not None:
        body["customer_id"] = customer_id
    return body
