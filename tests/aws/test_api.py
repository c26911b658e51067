"""The aws runtime's HTTP handlers, as API Gateway invokes them behind the JWT authorizer:
ingest validates exactly like ``POST /v1/events`` and answers per event; the alerts API
lists, pages, acknowledges and resolves, with scopes checked and changes audited."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ringfence.alerts.model import alert_id
from ringfence.runtimes.aws.handlers import api_event, ingest_event
from ringfence.testing import event
from tests.helpers.aws import ANALYST, PRODUCER, READER, Deployment, DeploymentFactory, http_event


def body(reply: dict[str, Any]) -> Any:
    return json.loads(reply["body"])


def burst(customer: str, t0: float) -> list[dict[str, Any]]:
    return [event("login.failed", at=t0 + i, customer_id=customer) for i in range(6)]


@pytest.fixture
def d(deploy: DeploymentFactory) -> Deployment:
    return deploy()


def test_ingest_needs_a_verified_caller_with_the_events_write_scope(d: Deployment) -> None:
    events = [event("login.failed")]
    assert ingest_event(d.runtime, http_event("POST /v1/events", None, events))["statusCode"] == 401
    denied = ingest_event(d.runtime, http_event("POST /v1/events", READER, events))
    assert denied["statusCode"] == 403
    assert body(denied)["error"]["details"] == {"required_scope": "events:write"}


def test_ingest_validates_like_the_embedded_api_and_answers_per_event(d: Deployment) -> None:
    rt = d.runtime
    wrong_type = http_event("POST /v1/events", PRODUCER, [event("login.failed")])
    wrong_type["headers"]["content-type"] = "text/plain"
    assert ingest_event(rt, wrong_type)["statusCode"] == 415
    malformed = ingest_event(rt, http_event("POST /v1/events", PRODUCER, '[{"event_id": '))
    assert malformed["statusCode"] == 400
    assert body(malformed)["error"]["code"] == "malformed_body"
    pan = event("card.authorization", card_id="4111111111111111")
    no_customer = event("login.failed", customer_id=None)
    good = event("login.failed")
    reply = ingest_event(rt, http_event("POST /v1/events", PRODUCER, [pan, good, no_customer]))
    assert reply["statusCode"] == 202
    answer = body(reply)
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == [0, 2]
    assert "4111111111111111" not in reply["body"]  # a card number is never echoed back
    nothing = ingest_event(rt, http_event("POST /v1/events", PRODUCER, [pan]))
    assert nothing["statusCode"] == 400
    assert body(nothing)["error"]["code"] == "invalid_events"
    # the accepted event reached the stream, keyed by its customer
    (shard,) = [s for s in d.stream.shard_ids() if d.stream.read(s)]
    (record,) = d.stream.read(shard)
    assert record["PartitionKey"] == good["customer_id"]
    assert json.loads(record["Data"])["event_id"] == good["event_id"]


def test_a_resent_event_already_processed_is_reported_as_a_duplicate(d: Deployment) -> None:
    events = burst("cus_a", time.time() - 300)
    d.send(events)
    d.stream.drain()
    again = body(ingest_event(d.runtime, http_event("POST /v1/events", PRODUCER, events)))
    assert (again["accepted"], again["duplicates"]) == (0, 6)
    assert sorted(again["duplicate_event_ids"]) == sorted(e["event_id"] for e in events)


def test_records_kinesis_refuses_are_retried_and_those_still_refused_reported(
    d: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinesis = d.runtime.clients.kinesis
    real = kinesis.put_records
    events = burst("cus_a", time.time() - 300)
    throttled_once = {events[1]["event_id"]}
    always_refused = events[4]["event_id"]

    def put_records(StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        refuse = []
        for r in Records:
            eid = json.loads(r["Data"])["event_id"]
            refuse.append(eid == always_refused or eid in throttled_once)
            throttled_once.discard(eid)
        kept = [r for r, no in zip(Records, refuse, strict=True) if not no]
        written = iter(real(StreamName=StreamName, Records=kept)["Records"] if kept else [])
        failed = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"}
        return {"Records": [failed if no else next(written) for no in refuse]}

    monkeypatch.setattr(kinesis, "put_records", put_records)
    reply = ingest_event(d.runtime, http_event("POST /v1/events", PRODUCER, events))
    assert reply["statusCode"] == 202
    answer = body(reply)
    assert answer["accepted"] == 5
    (refused,) = answer["rejected"]
    assert (refused["index"], refused["event_id"]) == (4, always_refused)
    assert "ProvisionedThroughputExceededException" in refused["errors"][0]["message"]
    written = [json.loads(r["Data"])["event_id"] for s in d.stream.shard_ids() for r in d.stream.read(s)]
    assert sorted(written) == sorted(e["event_id"] for e in events if e["event_id"] != always_refused)


def test_alerts_are_listed_paged_acknowledged_and_resolved_with_scopes_and_audit(d: Deployment) -> None:
    rt = d.runtime
    t0 = time.time() - 900
    d.send(burst("cus_a", t0) + burst("cus_b", t0) + burst("cus_c", t0))
    d.stream.drain()

    pages: list[str] = []
    cursor = ""
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        reply = api_event(rt, http_event("GET /v1/alerts", READER, query=query))
        assert reply["statusCode"] == 200
        page = body(reply)
        pages += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(pages) == sorted({alert_id("login_failed_burst", c, 1) for c in ("cus_a", "cus_b", "cus_c")})
    bad = api_event(rt, http_event("GET /v1/alerts", READER, query="cursor=bm90LWEtY3Vyc29y"))
    assert body(bad)["error"]["code"] == "invalid_cursor"
    assert api_event(rt, http_event("GET /v1/alerts", READER, query="status=nope"))["statusCode"] == 400

    target = alert_id("login_failed_burst", "cus_a", 1)
    assert api_event(rt, http_event("POST /v1/alerts/{id}/ack", READER, id=target))["statusCode"] == 403
    acked = api_event(rt, http_event("POST /v1/alerts/{id}/ack", ANALYST, {"reason": "looking"}, id=target))
    assert acked["statusCode"] == 200
    alert = body(acked)
    assert alert["status"] == "acknowledged"
    last = alert["history"][-1]
    assert (last["actor"], last["action"], last["reason"]) == ("analyst-1", "acknowledge", "looking")
    assert api_event(rt, http_event("POST /v1/alerts/{id}/ack", ANALYST, id=target))["statusCode"] == 200
    resolved = api_event(rt, http_event("POST /v1/alerts/{id}/resolve", ANALYST, {"reason": "fixed"}, id=target))
    assert body(resolved)["status"] == "resolved"
    assert api_event(rt, http_event("POST /v1/alerts/{id}/ack", ANALYST, id=target))["statusCode"] == 409
    assert api_event(rt, http_event("GET /v1/alerts/{id}", READER, id="al_nope"))["statusCode"] == 404
    listed = body(api_event(rt, http_event("GET /v1/alerts", READER, query="status=resolved")))
    assert [a["id"] for a in listed["items"]] == [target]

    day = time.strftime("%Y-%m-%d", time.gmtime())
    audit = rt.clients.dynamodb.query(
        TableName=rt.names.alerts_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"audit|{day}"}},
    )["Items"]
    assert [(a["actor"]["S"], a["action"]["S"], a["target"]["S"]) for a in audit] == [
        ("analyst-1", "alert.acknowledge", target),
        ("analyst-1", "alert.resolve", target),
    ]

    # a new burst after the alert was resolved is a new occurrence, with a new id
    d.send(burst("cus_a", t0 + 600))
    d.stream.drain()
    second = alert_id("login_failed_burst", "cus_a", 2)
    assert body(api_event(rt, http_event("GET /v1/alerts/{id}", READER, id=second)))["status"] == "open"
    assert body(api_event(rt, http_event("GET /v1/alerts/{id}", READER, id=target)))["status"] == "resolved"


def test_the_same_event_id_from_two_sources_is_two_events(d: Deployment) -> None:
    t0 = time.time() - 300
    web = event("login.failed", at=t0, event_id="evt-shared", source="web")
    app = event("login.failed", at=t0 + 1, event_id="evt-shared", source="mobile-app")
    d.send([web])
    d.stream.drain()
    reply = body(ingest_event(d.runtime, http_event("POST /v1/events", PRODUCER, [web, app])))
    assert (reply["accepted"], reply["duplicates"]) == (1, 1)  # web's was processed already; the app's is new
    d.stream.drain()
    assert d.runtime.state.processed(["web|evt-shared", "mobile-app|evt-shared"]) == {
        "web|evt-shared",
        "mobile-app|evt-shared",
    }


def test_a_stream_that_refuses_every_call_gets_a_503_with_retry_after(
    d: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(**kwargs: Any) -> Any:
        raise ConnectionError("the stream is unreachable")

    monkeypatch.setattr(d.runtime.clients.kinesis, "put_records", unavailable)
    reply = ingest_event(d.runtime, http_event("POST /v1/events", PRODUCER, [event("login.failed")]))
    assert reply["statusCode"] == 503
    assert reply["headers"]["retry-after"] == "1"
    (refused,) = body(reply)["error"]["details"]["rejected"]
    assert "ConnectionError" in refused["errors"][0]["message"]


def test_one_customers_alerts_are_listed_from_their_own_index_page_by_page(d: Deployment) -> None:
    t0 = time.time() - 3600
    d.send(burst("cus_a", t0) + burst("cus_b", t0) + burst("cus_a", t0 + 700))  # cus_a twice: resolve between
    d.stream.drain()
    first = alert_id("login_failed_burst", "cus_a", 1)
    api_event(d.runtime, http_event("POST /v1/alerts/{id}/resolve", ANALYST, id=first))
    d.send(burst("cus_a", t0 + 1400))
    d.stream.drain()
    seen: list[str] = []
    cursor = ""
    while True:
        query = "customer_id=cus_a&limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = body(api_event(d.runtime, http_event("GET /v1/alerts", READER, query=query)))
        seen += [a["id"] for a in page["items"]]
        assert all(a["customer_id"] == "cus_a" for a in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [alert_id("login_failed_burst", "cus_a", 2), first]  # newest first


SOON = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7 * 86400))


@pytest.mark.parametrize(
    ("silence", "says"),
    [
        ({"matchers": [], "ends_at": SOON, "comment": "x"}, "at least one matcher"),  # would mute everything
        ({"matchers": ['customer_id=~"(?=a)"'], "ends_at": SOON, "comment": "x"}, "customer_id"),
        ({"matchers": ["a=b"], "ends_at": SOON.rstrip("Z"), "comment": "x"}, "offset"),  # no time zone
        ({"matchers": ["a=b"], "ends_at": "2999-01-01T00:00:00Z", "comment": "x"}, "a year"),
        ({"matchers": ["a=b"] * 21, "ends_at": SOON, "comment": "x"}, "matchers"),
        ({"matchers": ["a=b"], "ends_at": SOON, "comment": " "}, "comment"),
    ],
)
def test_silences_are_checked_as_on_the_embedded_api(d: Deployment, silence: dict[str, Any], says: str) -> None:
    reply = api_event(d.runtime, http_event("POST /v1/silences", ANALYST, silence))
    assert reply["statusCode"] == 400
    assert says in body(reply)["error"]["message"]
