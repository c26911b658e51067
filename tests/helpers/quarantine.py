"""A pack that a crafted event poisons, and its events: for the quarantine tests of each runtime."""

from __future__ import annotations

import time
from typing import Any

from ringfence.testing import event
from tests.helpers.http import Api

# ``of``: the kept feature; with ``data.a * data.b`` a poison event's product (2**80) is a plain
# integer the engine accepts but the state codec cannot encode.
PACK = """
version: {version}
types: [acme.score]
features:
  - name: last_product
    by: customer_id
    agg: last
    of: {of}
    on: [acme.score]
rules:
  - id: acme_high
    on: [acme.score]
    when: data.a > 10
    severity: high
    audience: fraud
    title: "high score {{customer_id}}"
    dedup: "{{event_id}}"
"""
YAML = {"Content-Type": "application/yaml"}


def post_accepted(server: Api, key: str, *events: dict[str, Any]) -> None:
    """POST ``events``, which must all be accepted."""
    with server.client(key) as c:
        answer = c.post("/v1/events", json=list(events))
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == len(events)


def score(customer: str, event_id: str, a: int, b: int) -> dict[str, Any]:
    """An ``acme.score`` event: ``acme_high`` alerts when ``a > 10``; ``a = b = 2**40`` is the poison."""
    return event("acme.score", at=time.time(), customer_id=customer, event_id=event_id, source="acme", a=a, b=b)


def alerted(server: Api, key: str) -> set[str]:
    """The event ids ``acme_high`` alerted on."""
    with server.client(key) as c:
        answer = c.get("/v1/alerts", params={"rule_id": "acme_high", "limit": 500})
    assert answer.status_code == 200, answer.text
    return {a["dedup_key"] for a in answer.json()["items"]}
