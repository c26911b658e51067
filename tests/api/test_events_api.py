"""POST /v1/events over real HTTP against a real embedded server and SQLite files."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer
from ringfence.testing import event
from tests.helpers.http import alerts_for, post, risky_transfer, uid
from tests.helpers.keys import Keys


def test_an_event_posted_over_http_becomes_a_queryable_alert(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    response = post(server, keys.producer, risky_transfer(customer))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "duplicate_event_ids": [], "rejected": []}
    server.wait_processed(keys.reader)
    (alert,) = alerts_for(server, keys.reader, customer)
    assert alert["rule_id"] == "transfer_high_risk_country"
    assert alert["status"] == "open"
    assert alert["customer_id"] == customer
    assert alert["count"] == 1
    for field in (
        "id",
        "rule_version",
        "severity",
        "audience",
        "labels",
        "title",
        "summary",
        "evidence",
        "first_seen",
        "last_seen",
        "created_at",
        "assignee",
        "history",
    ):
        assert field in alert


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_a_batch_of_1000_events_is_accepted(server: EmbeddedServer, keys: Keys, content_type: str) -> None:
    events = [event("login.succeeded", customer_id=uid("cus")) for _ in range(1000)]
    body = (
        json.dumps(events).encode()
        if content_type == "application/json"
        else "\n".join(map(json.dumps, events)).encode()
    )
    response = post(server, keys.producer, body, content_type)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1000


def test_a_partly_invalid_batch_accepts_the_valid_events_and_explains_the_rest(
    server: EmbeddedServer, keys: Keys
) -> None:
    good = event("login.succeeded")
    bad_amount = event("card.authorization", amount="12.345")
    bad_type = {**event(), "type": "card.cloned"}
    response = post(server, keys.producer, [good, bad_amount, bad_type])
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"] == [
        {
            "index": 1,
            "event_id": bad_amount["event_id"],
            "errors": [{"field": "data.amount", "message": "EUR has 2 decimal places, got 3"}],
        },
        {
            "index": 2,
            "event_id": bad_type["event_id"],
            "errors": [{"field": "type", "message": "unknown event type 'card.cloned'"}],
        },
    ]


def test_a_fully_invalid_batch_is_400_with_per_event_errors(server: EmbeddedServer, keys: Keys) -> None:
    response = post(server, keys.producer, [{**event(), "occurred_at": "soon"}])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_events"
    assert error["details"]["rejected"][0]["errors"][0]["field"] == "occurred_at"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_body"),
        (b"[1, 2", "application/json", 400, "malformed_body"),
        (b"<event/>", "application/xml", 415, "unsupported_media_type"),
        (b"{}", "text/plain", 415, "unsupported_media_type"),
        (b"", "application/json", 400, "malformed_body"),
    ],
)
def test_unreadable_requests_get_their_documented_status(
    server: EmbeddedServer, keys: Keys, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = post(server, keys.producer, body, content_type)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_an_oversized_body_is_413(server: EmbeddedServer, keys: Keys) -> None:
    response = post(server, keys.producer, b"[" + b" " * (9 * 1024 * 1024) + b"]")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_too_many_events_in_one_batch_is_413(server: EmbeddedServer, keys: Keys) -> None:
    body = "\n".join(json.dumps(event("login.failed")) for _ in range(10_001)).encode()
    response = post(server, keys.producer, body, "application/x-ndjson")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_events"
    assert "exceeds the limit of 10000" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("Bearer rf_000000000000_" + "A" * 43, 401, "unauthorized"),
        ("Bearer not-a-key", 401, "unauthorized"),
        ("Basic dXNlcjpwYXNz", 401, "unauthorized"),
    ],
)
def test_missing_or_invalid_keys_are_401(server: EmbeddedServer, header: str | None, status: int, code: str) -> None:
    headers = {"Content-Type": "application/json"}
    if header:
        headers["Authorization"] = header
    response = httpx.post(f"{server.url}/v1/events", content=json.dumps(event()), headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_key_without_the_scope_is_403(server: EmbeddedServer, keys: Keys) -> None:
    response = post(server, keys.reader, event())
    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "forbidden",
        "message": "this API key lacks the 'events:write' scope",
        "details": {"required_scope": "events:write"},
    }


def test_posting_the_same_events_twice_reports_duplicates_and_adds_no_alerts(
    server: EmbeddedServer, keys: Keys
) -> None:
    customer = uid("cus")
    batch = [risky_transfer(customer), event("login.succeeded", customer_id=customer)]
    assert post(server, keys.producer, batch).json()["accepted"] == 2
    server.wait_processed(keys.reader)
    before = alerts_for(server, keys.reader, customer)
    again = post(server, keys.producer, batch)
    assert again.status_code == 202
    assert again.json()["accepted"] == 0
    assert again.json()["duplicates"] == 2
    assert again.json()["duplicate_event_ids"] == [e["event_id"] for e in batch]
    server.wait_processed(keys.reader)
    after = alerts_for(server, keys.reader, customer)
    assert [(a["id"], a["count"]) for a in after] == [(a["id"], a["count"]) for a in before] == [(before[0]["id"], 1)]


def test_late_events_are_processed_counted_and_visible(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    now = time.time()
    on_time = event("login.failed", customer_id=customer, at=now)
    late = event("login.failed", customer_id=customer, at=now - 600)
    assert post(server, keys.producer, [on_time]).status_code == 202
    assert post(server, keys.producer, [late]).status_code == 202
    server.wait_processed(keys.reader)
    with server.client(keys.reader) as c:
        listed = c.get("/v1/events/late", params={"limit": 1000}).json()
        metrics = c.get("/metrics").text
    ids = [item["event_id"] for item in listed["items"]]
    assert late["event_id"] in ids
    assert on_time["event_id"] not in ids
    assert listed["total"] >= 1
    (row,) = [i for i in listed["items"] if i["event_id"] == late["event_id"]]
    assert row["customer_id"] == customer
    assert row["watermark"] > row["occurred_at"]
    late_total = next(line for line in metrics.splitlines() if line.startswith("ringfence_events_late_total"))
    assert float(late_total.split()[1]) >= 1


def test_out_of_order_events_within_lateness_are_not_late(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    now = time.time()
    first = event("login.failed", customer_id=customer, at=now)
    slightly_older = event("login.failed", customer_id=customer, at=now - 2)
    post(server, keys.producer, [first, slightly_older])
    server.wait_processed(keys.reader)
    with server.client(keys.reader) as c:
        ids = [i["event_id"] for i in c.get("/v1/events/late", params={"limit": 1000}).json()["items"]]
    assert slightly_older["event_id"] not in ids
