"""The API the dashboard reads: alert counts and evidence events, a customer's recent
events, operations figures, recent rule hits, the current session; and the page routes."""

from __future__ import annotations

import time

import httpx

from ringfence.bench.servers import EmbeddedServer, ringfence_cli
from ringfence.testing import event
from tests.helpers.http import alerts_for, post, risky_transfer, uid
from tests.helpers.keys import Keys


def test_alert_counts_follow_the_list_filters(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    post(server, keys.producer, risky_transfer(customer))
    server.wait_processed(keys.reader)
    with server.client(keys.reader) as c:
        mine = c.get("/v1/alerts/counts", params={"customer_id": customer}).json()
        everything = c.get("/v1/alerts/counts").json()
        bad = c.get("/v1/alerts/counts", params={"severity": "loud"})
    assert mine == {"total": 1, "by_severity": {"high": 1}, "by_status": {"open": 1}}
    assert everything["total"] >= 1
    assert sum(everything["by_severity"].values()) == everything["total"]
    assert bad.status_code == 400
    assert bad.json()["error"]["details"] == {"parameter": "severity"}


def test_alert_events_are_the_evidence_events_read_back_from_the_log(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    sent = risky_transfer(customer)
    post(server, keys.producer, sent)
    server.wait_processed(keys.reader)
    (alert,) = alerts_for(server, keys.reader, customer)
    with server.client(keys.reader) as c:
        body = c.get(f"/v1/alerts/{alert['id']}/events").json()
        missing = c.get("/v1/alerts/al_nope/events")
    (item,) = body["items"]
    assert item["event_id"] == sent["event_id"]
    assert item["event"]["customer_id"] == customer
    assert item["event"]["data"]["payee_country"] == "KP"
    assert body["complete"] is True
    assert missing.status_code == 404


def test_customer_events_lists_only_that_customers_events_newest_first(server: EmbeddedServer, keys: Keys) -> None:
    customer, other = uid("cus"), uid("cus")
    mine = [event("login.succeeded", customer_id=customer) for _ in range(3)]
    # a customer id that contains another's as a prefix must not match
    post(server, keys.producer, [*mine, event("login.succeeded", customer_id=customer + "x"), event(customer_id=other)])
    with server.client(keys.admin) as c:
        body = c.get(f"/v1/customers/{customer}/events", params={"limit": 10}).json()
        limited = c.get(f"/v1/customers/{customer}/events", params={"limit": 2}).json()
    assert [i["event"]["event_id"] for i in body["items"]] == [e["event_id"] for e in reversed(mine)]
    assert len(limited["items"]) == 2
    assert body["searched_from_offset"] >= 1


def test_a_customer_whose_id_holds_a_slash_is_found_by_its_encoded_id(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("acme") + "/42"  # ids are the bank's, separators and all
    sent = event("login.succeeded", customer_id=customer)
    post(server, keys.producer, [sent])
    server.wait_processed(keys.reader)
    encoded = customer.replace("/", "%2F")
    with server.client(keys.admin) as c:
        events = c.get(f"/v1/customers/{encoded}/events")
        features = c.get(f"/v1/customers/{encoded}/features")
        page = c.get(f"/customers/{encoded}")
    assert [i["event"]["event_id"] for i in events.json()["items"]] == [sent["event_id"]]
    assert features.json()["customer_id"] == customer
    assert page.status_code == 303  # the page is there (not 404); an API key is no session: sign in
    assert page.headers["location"].startswith("/signin")


def test_customer_events_and_features_need_a_key_that_sees_every_audience(server: EmbeddedServer, keys: Keys) -> None:
    created = ringfence_cli(
        "keys",
        "create",
        "--name",
        uid("notifier"),
        "--scope",
        "alerts:read",
        "--audience",
        "customer",
        data_dir=server.data_dir,
    )
    notifier = created.stdout.strip().splitlines()[-1]
    with server.client(notifier) as c:
        assert c.get("/v1/customers/cus_1/events").status_code == 403
        assert c.get("/v1/customers/cus_1/features").status_code == 403  # features derive from raw events


def test_stats_report_throughput_lag_per_partition_and_rates(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.reader) as c:
        before = c.get("/v1/stats").json()
        post(server, keys.producer, [event("login.succeeded", customer_id=uid("cus")) for _ in range(20)])
        post(server, keys.producer, [{"type": "nope"}, event("login.succeeded", customer_id=uid("cus"))])
        server.wait_processed(keys.reader)
        time.sleep(4.5)  # two samples of the 2 s history
        after = c.get("/v1/stats").json()
        denied = httpx.get(f"{server.url}/v1/stats", headers={"Authorization": f"Bearer {keys.producer}"})
    assert after["totals"]["ingested"] - before["totals"]["ingested"] == 21
    assert after["totals"]["rejected"] - before["totals"]["rejected"] == 1
    assert after["lag_events"] == 0
    assert len(after["partitions"]) == 8
    assert all(p["lag_events"] == 0 for p in after["partitions"])
    assert after["processed_offset"] == after["log_head"]
    assert set(after["notifications"]) == {"pending", "sent", "dead", "superseded"}
    assert len(after["series"]) >= 2
    assert any(p["ingested_per_s"] > 0 for p in after["series"])
    assert all(p["dead_letters"] == after["notifications"]["dead"] for p in after["series"][-1:])
    assert denied.status_code == 403


def test_rules_report_hits_in_the_last_hour_and_day(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.admin) as c:

        def hits() -> dict[str, dict[str, int]]:
            detections = c.get("/v1/rules").json()["detections"]
            (rule,) = [d for d in detections if d["id"] == "transfer_high_risk_country"]
            return rule

        before = hits()
        post(server, keys.producer, risky_transfer(uid("cus")))
        server.wait_processed(keys.reader)
        after = hits()
    for window in ("hits", "hits_last_hour", "hits_last_day"):
        assert after[window].get("live", 0) == before[window].get("live", 0) + 1, window


def test_the_session_endpoint_returns_the_csrf_token_of_a_signed_in_browser(server: EmbeddedServer, keys: Keys) -> None:
    with httpx.Client(base_url=server.url) as browser:
        signed_in = browser.post("/v1/session", json={"key": keys.analyst}).json()
        # the cookie is Secure; httpx would not send it over http, so send it as a browser on localhost does
        cookie = browser.cookies.get("rf_session")
        current = browser.get("/v1/session", headers={"Cookie": f"rf_session={cookie}"})
        with_key = browser.get("/v1/session", headers={"Authorization": f"Bearer {keys.analyst}"})
        anonymous = httpx.get(f"{server.url}/v1/session")
    assert current.status_code == 200
    assert current.json()["csrf_token"] == signed_in["csrf_token"]
    assert current.json()["name"] == "analyst"
    assert with_key.status_code == 401
    assert anonymous.status_code == 401


def test_pages_redirect_strangers_to_sign_in_and_carry_a_strict_csp(server: EmbeddedServer, keys: Keys) -> None:
    for path in ("/", "/alerts/al_1", "/customers/cus_1", "/operations", "/rules"):
        response = httpx.get(f"{server.url}{path}", follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/signin?next={path}"
    signin = httpx.get(f"{server.url}/signin")
    assert signin.status_code == 200
    csp = signin.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert signin.headers.get_list("content-security-policy") == [csp]  # one policy, not the API's as well
    with httpx.Client(base_url=server.url) as browser:
        browser.post("/v1/session", json={"key": keys.reader})
        cookie = browser.cookies.get("rf_session")
        page = browser.get("/operations", headers={"Cookie": f"rf_session={cookie}"})
    assert page.status_code == 200
    assert '<script type="module" src="/static/main.js">' in page.text
    assert "<script>" not in page.text


def test_assets_are_served_only_from_the_static_folder(server: EmbeddedServer) -> None:
    ok = httpx.get(f"{server.url}/static/main.js")
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/javascript")
    for bad in ("/static/../routes.py", "/static/%2e%2e/routes.py", "/static/.hidden.js", "/static/nope.js"):
        response = httpx.get(f"{server.url}{bad}")
        assert response.status_code == 404, bad


def test_an_asset_name_the_file_system_refuses_is_a_404_and_its_card_number_is_not_logged(
    server: EmbeddedServer,
) -> None:
    """Found by a hostile test: a name too long for the file system answered 500, and the error
    log held the path, card number and all, twice."""
    name = "card-4111111111111111-" + "a" * 300 + ".js"
    assert httpx.get(f"{server.url}/static/{name}").status_code == 404
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert "4111111111111111" not in server.log_path.read_text(errors="replace")
