"""The HTTP API on Lambda, as API Gateway invokes it behind the JWT authorizer: the same app as
the embedded runtime's, through Mangum. Ingest validates exactly like ``POST /v1/events`` and
answers per event; alerts are listed, paged, acknowledged and resolved with scopes checked and
changes audited; the same request gets the same answer as from an embedded server, and what the
aws runtime does not serve answers 501."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ringfence.alerts.model import AlertQuery, alert_id
from ringfence.api.app import HSTS, SECURITY_HEADERS
from ringfence.bench.servers import EmbeddedServer
from ringfence.config import load_settings
from ringfence.errors import ConfigError
from ringfence.runtimes.aws.handlers import AwsRuntime
from ringfence.runtimes.aws.resources import AwsClients, AwsNames
from ringfence.testing import event
from tests.helpers.aws import ANALYST, PRODUCER, READER, REGION, Deployment, DeploymentFactory, http_event
from tests.helpers.keys import Keys

ADMIN = {"sub": "admin-1", "scope": "admin"}


def body(reply: dict[str, Any]) -> Any:
    return json.loads(reply["body"])


def burst(customer: str, t0: float) -> list[dict[str, Any]]:
    return [event("login.failed", at=t0 + i, customer_id=customer) for i in range(6)]


@pytest.fixture
def d(deploy: DeploymentFactory) -> Deployment:
    return deploy()


def test_ingest_needs_a_verified_caller_with_the_events_write_scope(d: Deployment) -> None:
    events = [event("login.failed")]
    anonymous = d.call(http_event("POST /v1/events", None, events))
    assert anonymous["statusCode"] == 401
    assert body(anonymous)["error"]["code"] == "unauthorized"
    denied = d.call(http_event("POST /v1/events", READER, events))
    assert denied["statusCode"] == 403
    assert body(denied)["error"]["details"] == {"required_scope": "events:write"}


def test_ingest_validates_like_the_embedded_api_and_answers_per_event(d: Deployment) -> None:
    wrong_type = http_event("POST /v1/events", PRODUCER, [event("login.failed")])
    wrong_type["headers"]["content-type"] = "text/plain"
    assert d.call(wrong_type)["statusCode"] == 415
    malformed = d.call(http_event("POST /v1/events", PRODUCER, '[{"event_id": '))
    assert malformed["statusCode"] == 400
    assert body(malformed)["error"]["code"] == "malformed_body"
    pan = event("card.authorization", card_id="4111111111111111")
    no_customer = event("login.failed", customer_id=None)
    good = event("login.failed")
    reply = d.call(http_event("POST /v1/events", PRODUCER, [pan, good, no_customer]))
    assert reply["statusCode"] == 202
    answer = body(reply)
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == [0, 2]
    assert "4111111111111111" not in reply["body"]  # a card number is never echoed back
    nothing = d.call(http_event("POST /v1/events", PRODUCER, [pan]))
    assert nothing["statusCode"] == 400
    assert body(nothing)["error"]["code"] == "invalid_events"
    # the accepted event reached the stream, keyed by its customer
    (shard,) = [s for s in d.stream.shard_ids() if d.stream.read(s)]
    (record,) = d.stream.read(shard)
    assert record["PartitionKey"] == good["customer_id"]
    assert json.loads(record["Data"])["event_id"] == good["event_id"]


@pytest.mark.parametrize("media_type", ["application/x-ndjson", "application/ndjson", "application/jsonl"])
def test_ndjson_is_taken_under_each_media_type_the_embedded_api_takes(d: Deployment, media_type: str) -> None:
    events = [event("login.failed"), event("login.failed")]
    request = http_event("POST /v1/events", PRODUCER, "\n".join(json.dumps(e) for e in events))
    request["headers"]["content-type"] = media_type
    reply = d.call(request)
    assert reply["statusCode"] == 202, reply
    assert body(reply)["accepted"] == 2


def test_a_resent_event_already_processed_is_reported_as_a_duplicate(d: Deployment) -> None:
    events = burst("cus_a", time.time() - 300)
    d.send(events)
    d.stream.drain()
    again = body(d.call(http_event("POST /v1/events", PRODUCER, events)))
    assert (again["accepted"], again["duplicates"]) == (0, 6)
    assert sorted(again["duplicate_event_ids"]) == sorted(e["event_id"] for e in events)


def test_an_event_a_request_holds_twice_is_written_once_and_the_repeat_reported(d: Deployment) -> None:
    first, other = event("login.failed"), event("login.failed")
    reply = body(d.call(http_event("POST /v1/events", PRODUCER, [first, other, first])))
    assert (reply["accepted"], reply["duplicates"]) == (2, 1)
    assert reply["duplicate_event_ids"] == [first["event_id"]]
    written = [json.loads(r["Data"])["event_id"] for s in d.stream.shard_ids() for r in d.stream.read(s)]
    assert sorted(written) == sorted([first["event_id"], other["event_id"]])


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
    reply = d.call(http_event("POST /v1/events", PRODUCER, events))
    assert reply["statusCode"] == 202
    answer = body(reply)
    assert answer["accepted"] == 5
    (refused,) = answer["rejected"]
    assert (refused["index"], refused["event_id"]) == (4, always_refused)
    assert "ProvisionedThroughputExceededException" in refused["errors"][0]["message"]
    written = [json.loads(r["Data"])["event_id"] for s in d.stream.shard_ids() for r in d.stream.read(s)]
    assert sorted(written) == sorted(e["event_id"] for e in events if e["event_id"] != always_refused)


def test_alerts_are_listed_paged_acknowledged_and_resolved_with_scopes_and_audit(d: Deployment) -> None:
    t0 = time.time() - 900
    d.send(burst("cus_a", t0) + burst("cus_b", t0) + burst("cus_c", t0))
    d.stream.drain()

    pages: list[str] = []
    cursor = ""
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        reply = d.call(http_event("GET /v1/alerts", READER, query=query))
        assert reply["statusCode"] == 200
        page = body(reply)
        pages += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(pages) == sorted({alert_id("login_failed_burst", c, 1) for c in ("cus_a", "cus_b", "cus_c")})
    assert d.call(http_event("GET /v1/alerts", READER, query="cursor=bm90LWEtY3Vyc29y"))["statusCode"] == 400
    assert d.call(http_event("GET /v1/alerts", READER, query="status=nope"))["statusCode"] == 400

    target = alert_id("login_failed_burst", "cus_a", 1)
    ack = "POST /v1/alerts/{alert_id}/ack"
    assert d.call(http_event(ack, READER, alert_id=target))["statusCode"] == 403
    acked = d.call(http_event(ack, ANALYST, {"reason": "looking"}, alert_id=target))
    assert acked["statusCode"] == 200
    alert = body(acked)
    assert alert["status"] == "acknowledged"
    last = alert["history"][-1]
    assert (last["actor"], last["action"], last["reason"]) == ("jwt:analyst-1", "acknowledge", "looking")
    assert d.call(http_event(ack, ANALYST, alert_id=target))["statusCode"] == 200
    resolved = d.call(http_event("POST /v1/alerts/{alert_id}/resolve", ANALYST, {"reason": "fixed"}, alert_id=target))
    assert body(resolved)["status"] == "resolved"
    conflict = d.call(http_event(ack, ANALYST, alert_id=target))  # an invalid transition
    assert (conflict["statusCode"], body(conflict)["error"]["code"]) == (409, "conflict")
    assert d.call(http_event("GET /v1/alerts/{alert_id}", READER, alert_id="al_nope"))["statusCode"] == 404
    listed = body(d.call(http_event("GET /v1/alerts", READER, query="status=resolved")))
    assert [a["id"] for a in listed["items"]] == [target]

    entries, _ = d.runtime.alerts.audit.list_audit(10)
    assert [(a["actor"], a["action"], a["target"]) for a in reversed(entries)] == [
        ("jwt:analyst-1", "alert.acknowledge", target),
        ("jwt:analyst-1", "alert.resolve", target),
    ]

    # a new burst after the alert was resolved is a new occurrence, with a new id
    d.send(burst("cus_a", t0 + 600))
    d.stream.drain()
    second = alert_id("login_failed_burst", "cus_a", 2)
    assert body(d.call(http_event("GET /v1/alerts/{alert_id}", READER, alert_id=second)))["status"] == "open"
    assert body(d.call(http_event("GET /v1/alerts/{alert_id}", READER, alert_id=target)))["status"] == "resolved"


def test_an_audience_claim_limits_the_alerts_a_caller_sees(d: Deployment) -> None:
    d.send(burst("cus_a", time.time() - 900))
    d.stream.drain()
    target = alert_id("login_failed_burst", "cus_a", 1)
    audience = body(d.call(http_event("GET /v1/alerts/{alert_id}", READER, alert_id=target)))["audience"]
    other = "aml" if audience != "aml" else "fraud"
    desk = {**READER, "ringfence_audiences": f"[{other}]"}
    assert body(d.call(http_event("GET /v1/alerts", desk)))["items"] == []
    assert d.call(http_event("GET /v1/alerts/{alert_id}", desk, alert_id=target))["statusCode"] == 404
    assert d.call(http_event("GET /v1/silences", desk))["statusCode"] == 403  # silences span every desk


def test_the_same_event_id_from_two_sources_is_two_events(d: Deployment) -> None:
    t0 = time.time() - 300
    web = event("login.failed", at=t0, event_id="evt-shared", source="web")
    app = event("login.failed", at=t0 + 1, event_id="evt-shared", source="mobile-app")
    d.send([web])
    d.stream.drain()
    reply = body(d.call(http_event("POST /v1/events", PRODUCER, [web, app])))
    assert (reply["accepted"], reply["duplicates"]) == (1, 1)  # web's was processed already; the app's is new
    d.stream.drain()
    customer = web["customer_id"]
    assert d.runtime.state.seen([(customer, "web|evt-shared"), (customer, "mobile-app|evt-shared")]) == {
        "web|evt-shared",
        "mobile-app|evt-shared",
    }


def test_a_stream_that_refuses_every_call_gets_a_503_with_retry_after(
    d: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(**kwargs: Any) -> Any:
        raise ConnectionError("the stream is unreachable")

    monkeypatch.setattr(d.runtime.clients.kinesis, "put_records", unavailable)
    reply = d.call(http_event("POST /v1/events", PRODUCER, [event("login.failed")]))
    assert reply["statusCode"] == 503
    assert reply["headers"]["retry-after"] == "1"
    error = body(reply)["error"]
    assert error["code"] == "overloaded"
    assert "ConnectionError" in error["message"]


def test_one_customers_alerts_are_listed_from_their_own_index_page_by_page(d: Deployment) -> None:
    t0 = time.time() - 3600
    d.send(burst("cus_a", t0) + burst("cus_b", t0) + burst("cus_a", t0 + 700))  # cus_a twice: resolve between
    d.stream.drain()
    first = alert_id("login_failed_burst", "cus_a", 1)
    assert d.call(http_event("POST /v1/alerts/{alert_id}/resolve", ANALYST, alert_id=first))["statusCode"] == 200
    d.send(burst("cus_a", t0 + 1400))
    d.stream.drain()
    seen: list[str] = []
    cursor = ""
    while True:
        query = "customer_id=cus_a&limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = body(d.call(http_event("GET /v1/alerts", READER, query=query)))
        seen += [a["id"] for a in page["items"]]
        assert all(a["customer_id"] == "cus_a" for a in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [alert_id("login_failed_burst", "cus_a", 2), first]  # newest first


def test_silences_are_created_listed_and_expired(d: Deployment) -> None:
    silence = {"matchers": ["customer_id=cus_z"], "ends_at": SOON, "comment": "maintenance"}
    created = d.call(http_event("POST /v1/silences", ANALYST, silence))
    assert created["statusCode"] == 201
    made = body(created)
    (listed,) = body(d.call(http_event("GET /v1/silences", READER)))["items"]
    assert listed["id"] == made["id"]
    second = body(d.call(http_event("POST /v1/silences", ANALYST, silence)))
    page = body(d.call(http_event("GET /v1/silences", READER, query="limit=1")))
    assert [s["id"] for s in page["items"]] == [second["id"]]  # newest first, a page at a time
    rest = body(d.call(http_event("GET /v1/silences", READER, query=f"limit=1&cursor={page['next_cursor']}")))
    assert [s["id"] for s in rest["items"]] == [made["id"]]
    forged = d.call(http_event("GET /v1/silences", READER, query="cursor=eyJhIjp7IlMiOiJiIn19"))
    assert forged["statusCode"] == 400
    expired = d.call(http_event("DELETE /v1/silences/{silence_id}", ANALYST, silence_id=made["id"]))
    assert expired["statusCode"] == 200
    assert body(expired)["state"] == "expired"
    missing = d.call(http_event("DELETE /v1/silences/{silence_id}", ANALYST, silence_id="sil_nope"))
    assert missing["statusCode"] == 404


def test_the_notification_log_is_listed(d: Deployment) -> None:
    reply = d.call(http_event("GET /v1/notifications", READER, query="status=dead"))
    assert reply["statusCode"] == 200
    assert body(reply) == {"items": [], "next_cursor": None}


SOON = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7 * 86400))
BAD_SILENCES = [
    ({"matchers": [], "ends_at": SOON, "comment": "x"}, "at least one matcher"),  # would mute everything
    ({"matchers": ['customer_id=~"(?=a)"'], "ends_at": SOON, "comment": "x"}, "customer_id"),
    ({"matchers": ["a=b"], "ends_at": SOON.rstrip("Z"), "comment": "x"}, "offset"),  # no time zone
    ({"matchers": ["a=b"], "ends_at": "2999-01-01T00:00:00Z", "comment": "x"}, "a year"),
    ({"matchers": ["a=b"] * 21, "ends_at": SOON, "comment": "x"}, "matchers"),
    ({"matchers": ["a=b"], "ends_at": SOON, "comment": " "}, "comment"),
]


@pytest.mark.parametrize(("silence", "says"), BAD_SILENCES)
def test_silences_are_checked_as_on_the_embedded_api(d: Deployment, silence: dict[str, Any], says: str) -> None:
    reply = d.call(http_event("POST /v1/silences", ANALYST, silence))
    assert reply["statusCode"] == 400
    assert says in body(reply)["error"]["message"]


# (route, JWT claims, the embedded key of the same scopes, body, query, path): each answered alike
SAME_ANSWERS: list[tuple[str, dict[str, str], str, Any, str, dict[str, str]]] = [
    *[("POST /v1/silences", ANALYST, "analyst", silence, "", {}) for silence, _ in BAD_SILENCES],
    ("POST /v1/silences", READER, "reader", BAD_SILENCES[0][0], "", {}),
    ("GET /v1/alerts", READER, "reader", None, "status=nope", {}),
    ("GET /v1/alerts", READER, "reader", None, "limit=501", {}),
    ("GET /v1/alerts", READER, "reader", None, "since=yesterday", {}),
    ("GET /v1/alerts", PRODUCER, "producer", None, "", {}),
    ("GET /v1/alerts/{alert_id}", READER, "reader", None, "", {"alert_id": "al_nope"}),
    ("POST /v1/alerts/{alert_id}/ack", ANALYST, "analyst", None, "", {"alert_id": "al_nope"}),
    ("POST /v1/alerts/{alert_id}/resolve", READER, "reader", None, "", {"alert_id": "al_nope"}),
    ("DELETE /v1/silences/{silence_id}", ANALYST, "analyst", None, "", {"silence_id": "sil_nope"}),
    ("POST /v1/notifications/{notification_id}/redrive", ANALYST, "analyst", None, "", {"notification_id": "n_x"}),
    ("POST /v1/events", PRODUCER, "producer", '[{"event_id": ', "", {}),
    ("POST /v1/events", PRODUCER, "producer", [{"event_id": "e1"}], "", {}),
    ("GET /v1/nowhere", READER, "reader", None, "", {}),
    ("DELETE /v1/alerts", ANALYST, "analyst", None, "", {}),
]


@pytest.mark.parametrize(("route", "claims", "key", "sent", "query", "path"), SAME_ANSWERS)
def test_a_request_gets_the_same_answer_as_from_the_embedded_api(
    d: Deployment,
    server: EmbeddedServer,
    keys: Keys,
    route: str,
    claims: dict[str, str],
    key: str,
    sent: Any,
    query: str,
    path: dict[str, str],
) -> None:
    request = http_event(route, claims, sent, query=query, **path)
    aws = d.call(request)
    method = route.split(" ", 1)[0]
    content = None if sent is None else request["body"].encode()
    embedded = httpx.request(
        method,
        f"{server.url}{request['rawPath']}" + (f"?{query}" if query else ""),
        content=content,
        headers={"authorization": f"Bearer {getattr(keys, key)}", "content-type": "application/json"},
    )
    assert (aws["statusCode"], body(aws)) == (embedded.status_code, embedded.json())


def test_the_audit_trail_is_served_to_admins_newest_first_in_pages(d: Deployment) -> None:
    d.send(burst("cus_a", time.time() - 900))
    d.stream.drain()
    target = alert_id("login_failed_burst", "cus_a", 1)
    for action in ("ack", "resolve"):
        route = f"POST /v1/alerts/{{alert_id}}/{action}"
        assert d.call(http_event(route, ANALYST, {"reason": action}, alert_id=target))["statusCode"] == 200
    assert d.call(http_event("GET /v1/audit", ANALYST))["statusCode"] == 403
    first = body(d.call(http_event("GET /v1/audit", ADMIN, query="limit=1")))
    assert [(e["actor"], e["action"], e["target"]) for e in first["items"]] == [
        ("jwt:analyst-1", "alert.resolve", target)
    ]
    assert first["items"][0]["detail"] == {"reason": "resolve"}
    rest = body(d.call(http_event("GET /v1/audit", ADMIN, query=f"limit=1&cursor={first['next_cursor']}")))
    assert [e["action"] for e in rest["items"]] == ["alert.acknowledge"]
    assert rest["next_cursor"] is None
    started = time.monotonic()  # a cursor far past the head reads from the head, not every block down to it
    far = body(d.call(http_event("GET /v1/audit", ADMIN, query=f"limit=1&cursor={10**12}")))
    assert time.monotonic() - started < 5
    assert [e["action"] for e in far["items"]] == ["alert.resolve"]


def test_the_runtime_is_not_built_without_an_audit_key(aws_endpoint: str) -> None:
    names = AwsNames("stream", "state", "alerts", "arn:aws:sns:us-east-1:123456789012:alerts", "poison")
    with pytest.raises(ConfigError, match="RINGFENCE_SECRET_AUDIT_KEY"):
        AwsRuntime.create(names, load_settings(environ={}), AwsClients(REGION), audit_key=None)


# what the aws runtime does not serve: (route, body, path)
NOT_SERVED: list[tuple[str, Any, dict[str, str]]] = [
    ("GET /readyz", None, {}),
    ("GET /metrics", None, {}),
    ("GET /v1/stats", None, {}),
    ("GET /v1/events/late", None, {}),
    ("GET /v1/quarantine", None, {}),
    ("GET /v1/alerts/counts", None, {}),
    ("GET /v1/alerts/stream", None, {}),
    ("GET /v1/alerts/{alert_id}/events", None, {"alert_id": "al_x"}),
    ("POST /v1/alerts/{alert_id}/assign", {"assignee": "ana"}, {"alert_id": "al_x"}),
    ("GET /v1/rules", None, {}),
    ("GET /v1/lists/{name}", None, {"name": "high_risk_countries"}),
    ("PUT /v1/fx/rates", {"rates": []}, {}),
    ("GET /v1/customers/{customer_id}/features", None, {"customer_id": "cus_a"}),
    ("GET /v1/customers/{customer_id}/events", None, {"customer_id": "cus_a"}),
    ("POST /v1/session", {"key": "rf_0123456789ab_x"}, {}),
]


def test_the_fx_rates_ship_with_the_deployment_and_ingest_converts_with_them(
    deploy: DeploymentFactory, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date().isoformat()
    rates = tmp_path / "rates.csv"
    rates.write_text(f"currency,rate,as_of\nHUF,0.0025,{today}\n")
    d = deploy(fx_rates=rates)
    table = body(d.call(http_event("GET /v1/fx/rates", ADMIN)))
    assert (table["reference"], [(r["currency"], r["rate"]) for r in table["rates"]]) == ("EUR", [("HUF", "0.0025")])
    small, large = (
        event("transfer.initiated", customer_id="cus_s", amount="2000.00", currency="HUF"),
        event("transfer.initiated", customer_id="cus_l", amount="1000000.00", currency="HUF"),
    )
    d.send([small, large])
    d.stream.drain()
    large_payments = [
        a for a in d.runtime.alerts.list_alerts(AlertQuery(limit=50))[0] if a.rule_id == "notify_large_transaction"
    ]
    assert [a.customer_id for a in large_payments] == ["cus_l"]  # 2,000 HUF is about EUR 5
    assert large_payments[0].evidence["events"][-1]["fx"] == {"reference": "EUR", "rate": "0.0025", "as_of": today}


@pytest.mark.parametrize(("route", "sent", "path"), NOT_SERVED)
def test_what_the_aws_runtime_does_not_serve_answers_501(
    d: Deployment, route: str, sent: Any, path: dict[str, str]
) -> None:
    reply = d.call(http_event(route, ADMIN, sent, **path))
    assert reply["statusCode"] == 501, reply
    assert body(reply)["error"]["code"] == "not_available"


def test_answers_carry_the_embedded_apis_security_headers(d: Deployment, server: EmbeddedServer, keys: Keys) -> None:
    aws = d.call(http_event("GET /v1/alerts/{alert_id}", READER, alert_id="al_nope"))
    embedded = httpx.get(f"{server.url}/v1/alerts/al_nope", headers={"authorization": f"Bearer {keys.reader}"})
    for name, value in SECURITY_HEADERS:
        assert aws["headers"][name.decode()] == embedded.headers[name.decode()] == value.decode()
    ((hsts, max_age),) = HSTS  # API Gateway serves HTTPS only: the embedded server's HTTPS header
    assert aws["headers"][hsts.decode()] == max_age.decode()


def test_liveness_answers_without_credentials(d: Deployment) -> None:
    reply = d.call(http_event("GET /healthz", None))
    assert (reply["statusCode"], json.loads(reply["body"])) == (200, {"status": "ok"})
