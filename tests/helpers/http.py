"""Calls to a real server's HTTP API (embedded, or a kafka runtime's services), and the events
tests post to it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Protocol

import httpx

from ringfence.bench.servers import EmbeddedServer
from ringfence.testing import event


class Api(Protocol):
    """What the helpers need of a server: an embedded one, or a kafka runtime's ingest or api service."""

    @property
    def url(self) -> str: ...

    def client(self, key: str | None) -> httpx.Client: ...


def silence_of_3_kib() -> dict[str, Any]:
    """A silence body whose change costs about 3 KiB of a key's budget (1 KiB, and its 950
    characters of comment twice: in its row and in the audit entry)."""
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    return {"matchers": ["customer_id=cus_budget"], "ends_at": ends, "comment": "maintenance window " * 50}


def uid(prefix: str) -> str:
    """A unique id, so tests sharing a server never see each other's customers."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def risky_transfer(customer: str, **kw: Any) -> dict[str, Any]:
    """A transfer the default pack alerts on (a new payee in a high-risk country)."""
    return event(
        "transfer.initiated", customer_id=customer, payee_id="pay_9", payee_country="KP", amount="1500.00", **kw
    )


def post(server: EmbeddedServer, key: str | None, body: Any, content_type: str = "application/json") -> httpx.Response:
    """POST /v1/events with ``body`` (JSON-encoded unless bytes), whatever the answer."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with server.client(key) as c:
        return c.post("/v1/events", content=content, headers={"Content-Type": content_type})


def post_batch(server: Api, key: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """POST /v1/events that must be accepted (202); its answer."""
    response = httpx.post(
        f"{server.url}/v1/events",
        content=json.dumps(batch),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def alerts_for(server: EmbeddedServer, key: str, customer: str) -> list[dict[str, Any]]:
    """The first page of ``customer``'s alerts."""
    with server.client(key) as c:
        response = c.get("/v1/alerts", params={"customer_id": customer})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def all_alerts(server: Api, key: str) -> dict[str, tuple[str, int]]:
    """Every alert, paged through: id to (rule, count); an id seen twice fails."""
    found: dict[str, tuple[str, int]] = {}
    cursor = None
    with server.client(key) as c:
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/alerts", params=params).json()
            for alert in page["items"]:
                assert alert["id"] not in found
                found[alert["id"]] = (alert["rule_id"], alert["count"])
            cursor = page["next_cursor"]
            if cursor is None:
                return found
