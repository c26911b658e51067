"""Alerts over real HTTP: read, filter, page, acknowledge, resolve, with history."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringfence.bench.servers import EmbeddedServer
from ringfence.testing import event
from tests.helpers.http import post, risky_transfer, uid
from tests.helpers.keys import Keys


@pytest.fixture
def alert(server: EmbeddedServer, keys: Keys) -> dict[str, Any]:
    customer = uid("cus")
    assert post(server, keys.producer, risky_transfer(customer)).status_code == 202
    server.wait_processed(keys.reader)
    with server.client(keys.reader) as c:
        (item,) = c.get("/v1/alerts", params={"customer_id": customer}).json()["items"]
    return dict(item)


def test_one_alert_has_evidence_and_history(server: EmbeddedServer, keys: Keys, alert: dict[str, Any]) -> None:
    with server.client(keys.reader) as c:
        body = c.get(f"/v1/alerts/{alert['id']}").json()
    assert body["id"] == alert["id"]
    (evidence_event,) = body["evidence"]["events"]
    assert evidence_event["type"] == "transfer.initiated"
    assert body["history"][0]["action"] == "created"
    assert body["history"][0]["reason"].startswith("rule transfer_high_risk_country matched event")


def test_ack_then_resolve_over_http(server: EmbeddedServer, keys: Keys, alert: dict[str, Any]) -> None:
    with server.client(keys.analyst) as c:
        acked = c.post(f"/v1/alerts/{alert['id']}/ack", json={"reason": "investigating"})
        assert acked.status_code == 200
        assert acked.json()["status"] == "acknowledged"
        resolved = c.post(f"/v1/alerts/{alert['id']}/resolve")
        assert resolved.json()["status"] == "resolved"
        history = resolved.json()["history"]
        assert [(h["action"], h["actor"]) for h in history[1:]] == [
            ("acknowledge", "key:analyst"),
            ("resolve", "key:analyst"),
        ]
        assert history[1]["reason"] == "investigating"
        again = c.post(f"/v1/alerts/{alert['id']}/ack")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "conflict"


def test_a_read_only_key_cannot_change_alerts(server: EmbeddedServer, keys: Keys, alert: dict[str, Any]) -> None:
    with server.client(keys.reader) as c:
        response = c.post(f"/v1/alerts/{alert['id']}/ack")
    assert response.status_code == 403
    with server.client(keys.producer) as c:
        assert c.get("/v1/alerts").status_code == 403


def test_unknown_alert_is_404(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.analyst) as c:
        assert c.get("/v1/alerts/al_nope").json()["error"]["code"] == "not_found"
        assert c.post("/v1/alerts/al_nope/resolve").status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{bad", 400),
        (b'{"reason": 5}', 400),
        (b'{"why": "x"}', 400),
        (json.dumps({"reason": "x" * 1001}).encode(), 400),
    ],
)
def test_bad_action_bodies_are_400(
    server: EmbeddedServer, keys: Keys, alert: dict[str, Any], body: bytes, status: int
) -> None:
    with server.client(keys.analyst) as c:
        response = c.post(f"/v1/alerts/{alert['id']}/ack", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"]["code"] == "invalid_body"


def test_filters_and_cursor_pagination(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    events = [
        event(
            "card.authorization",
            customer_id=customer,
            card_id=uid("tok"),
            merchant={"id": "m", "mcc": "5411", "country": "IR"},
        )
        for _ in range(5)
    ]
    post(server, keys.producer, events)
    server.wait_processed(keys.reader)
    with server.client(keys.reader) as c:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"customer_id": customer, "limit": 2, "severity": "high", "status": "open"}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/v1/alerts", params=params).json()
            seen += [a["id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 1  # one dedup key (customer:country) -> one alert
        (only,) = c.get("/v1/alerts", params={"customer_id": customer, "rule_id": "card_high_risk_country"}).json()[
            "items"
        ]
        assert only["count"] == 5
        assert c.get("/v1/alerts", params={"customer_id": customer, "audience": "aml"}).json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"status": "closed"},
        {"severity": "urgent"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},
        {"cursor": "-1"},
        {"customer_id": "x" * 129},
    ],
)
def test_bad_filters_are_400_naming_the_parameter(server: EmbeddedServer, keys: Keys, params: dict[str, str]) -> None:
    with server.client(keys.reader) as c:
        response = c.get("/v1/alerts", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["details"]["parameter"] == next(iter(params))
