"""Alert signals as the engine hands them to a store, for store and dispatcher tests."""

from __future__ import annotations

from typing import Any

from ringfence.engine.rules import AlertSignal


def signal(
    offset: int, *, rule: str = "velocity", key: str = "tok_1", mode: str = "live", t: float = 100.0, **kw: Any
) -> AlertSignal:
    """The signal of event ``e{offset}``; keyword arguments override any field."""
    fields: dict[str, Any] = {
        "rule_id": rule,
        "rule_version": "t1",
        "severity": "high",
        "audience": "fraud",
        "mode": mode,
        "dedup_key": key,
        "title": f"title {offset}",
        "summary": "s",
        "labels": {"card": key},
        "event_id": f"e{offset}",
        "event_type": "card.authorization",
        "offset": offset,
        "occurred_at": t + offset,
        "ingested_at": t,
        "features": {"n": offset},
        "customer_id": "c1",
    }
    return AlertSignal(**{**fields, **kw})
