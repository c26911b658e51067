"""Helpers for users' own tests of their rule packs and producers.

``FixedClock`` makes time explicit; ``event`` builds a valid v1 event with defaults, as a
producer sends it; ``run_pack`` runs events through a pack as the server would. They depend
on nothing above the engine.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ringfence.clock import iso
from ringfence.engine import AlertSignal, Engine, RulePack, load_pack
from ringfence.events.decode import REFERENCE_ONLY, validate_event
from ringfence.events.fx import FxTable

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


def run_pack(
    pack: RulePack | str,
    events: Iterable[Mapping[str, Any] | str | bytes],
    *,
    until: float | None = None,
    now: float | None = None,
    fx: FxTable = REFERENCE_ONLY,
) -> list[AlertSignal]:
    """Run ``events`` in order through ``pack`` (a loaded pack or its YAML) as the server's engine
    would, and return the alert signals of every detection that fired, shadow ones included
    (the alert pipeline, which makes alerts of them and silences and routes those, is not run).

    Events are given as producers send them (dicts such as :func:`event` builds, or JSON text) and
    validated as ``POST /v1/events`` validates them: an invalid one raises
    :class:`~ringfence.errors.EventError` naming the fields at fault. Absence timers fire as the
    events' own times pass their deadlines; ``until`` moves event time on to that instant at
    the end, to see what fires by then. ``now``: refuse events dated more than 5 minutes after
    it, like the server (default: no such check, so fixed test dates never go stale). ``fx``:
    the rates amounts are converted into the reference currency at (default: none, so only
    amounts in the reference currency get ``data.amount_ref``).

    >>> from ringfence.testing import event, run_pack
    >>> pack = '''
    ... version: "1"
    ... rules:
    ...   - id: large_card_payment
    ...     on: [card.authorization]
    ...     when: data.amount >= 1000
    ...     severity: high
    ...     audience: fraud
    ...     title: "Card payment of {data.amount}"
    ... '''
    >>> [s.title for s in run_pack(pack, [event(amount="25.00"), event(amount="2500.00")])]
    ['Card payment of 2500']
    """
    loaded = load_pack(pack) if isinstance(pack, str) else pack
    engine = Engine(loaded)
    clock = math.inf if now is None else now
    signals: list[AlertSignal] = []
    for offset, body in enumerate(events):
        if isinstance(body, Mapping):
            body = msgspec.json.encode(body)
        valid = validate_event(body.encode() if isinstance(body, str) else body, clock, loaded.custom_types, fx=fx)
        signals += engine.process(valid, offset, 0, valid.occurred_at)
    signals += engine.advance(until)
    return signals
