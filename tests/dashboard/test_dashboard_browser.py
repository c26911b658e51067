"""The dashboard in a real browser: sign in, watch an alert arrive live, read its evidence,
acknowledge it, sign out; the customer, operations and rules views; offline assets, a strict
CSP with no violation, labelled controls, and a phone-width layout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.engine.pack import load_pack_file
from ringfence.testing import event
from tests.helpers.browser import LIVE_TIMEOUT_MS, Session
from tests.helpers.http import post, risky_transfer, uid


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    keys = {
        "analyst": create_key(data_dir, "ana", "alerts:read", "alerts:write", "rules:read", "rules:write"),
        "viewer": create_key(data_dir, "vic", "alerts:read"),
        "producer": create_key(data_dir, "producer", "events:write"),
    }
    server = start_server(data_dir)
    yield server, keys
    assert server.stop(), server.log_path.read_text()[-3000:]


@pytest.fixture
def analyst(browser: Any, dash: tuple[EmbeddedServer, dict[str, str]]) -> Iterator[Session]:
    server, keys = dash
    session = Session(browser, server)
    session.sign_in(keys["analyst"])
    yield session
    session.close()


def risky_alert(dash: tuple[EmbeddedServer, dict[str, str]], reader: str = "analyst") -> tuple[str, dict[str, Any]]:
    """A new customer's risky transfer, processed: the customer and its one alert."""
    server, keys = dash
    customer = uid("cus")
    post(server, keys["producer"], risky_transfer(customer))
    server.wait_processed(keys[reader])
    with server.client(keys[reader]) as c:
        (alert,) = c.get("/v1/alerts", params={"customer_id": customer}).json()["items"]
    return customer, alert


def test_an_unauthenticated_visit_is_sent_to_sign_in_and_a_bad_key_is_refused(
    browser: Any, dash: tuple[EmbeddedServer, dict[str, str]], screenshots: Path
) -> None:
    server, keys = dash
    s = Session(browser, server)
    try:
        s.page.goto("/operations")
        assert s.page.url == f"{server.url}/signin?next=/operations"
        s.page.get_by_label("API key").fill("rf_not_a_key")
        s.page.get_by_role("button", name="Sign in").click()
        s.page.get_by_role("alert").wait_for()
        assert "api key" in s.page.get_by_role("alert").inner_text().lower()
        s.page.screenshot(path=screenshots / "signin.png")
        assert s.problems(401) == []  # the refused sign-in, and nothing else
        s.console.clear()
        s.page.get_by_label("API key").fill(keys["viewer"])
        s.page.get_by_role("button", name="Sign in").click()
        s.page.wait_for_url(f"{server.url}/operations")  # back where the visit started
        assert s.problems() == []
    finally:
        s.close()


def test_sign_in_see_an_alert_arrive_live_open_its_evidence_acknowledge_it_and_sign_out(
    analyst: Session, dash: tuple[EmbeddedServer, dict[str, str]], screenshots: Path
) -> None:
    server, keys = dash
    page = analyst.page
    page.get_by_text("● live").wait_for(timeout=LIVE_TIMEOUT_MS)
    page.evaluate("window.__notReloaded = true")
    customer = uid("cus")
    sent = risky_transfer(customer)
    assert post(server, keys["producer"], sent).status_code == 202

    page.get_by_role("link", name=customer).wait_for(timeout=LIVE_TIMEOUT_MS)  # arrived without a reload
    assert page.evaluate("window.__notReloaded") is True
    assert int(page.locator('[data-severity="high"]').inner_text()) >= 1
    page.screenshot(path=screenshots / "alerts.png")

    row = page.locator("tr", has=page.get_by_role("link", name=customer))
    row.get_by_role("link", name=re.compile("Transfer of")).click()
    page.get_by_role("heading", name=re.compile("Transfer of 1500 EUR")).wait_for()
    evidence = page.get_by_role("list", name="Evidence timeline")
    assert sent["event_id"] in evidence.inner_text()
    assert re.search(r"payee_country\s+KP", evidence.inner_text())
    assert "rule fired" in evidence.inner_text()
    assert page.get_by_role("region", name="Features at firing").is_visible()
    assert page.locator("#alert-status").inner_text() == "open"
    assert analyst.unlabelled_controls() == []
    page.screenshot(path=screenshots / "alert.png", full_page=True)

    page.get_by_role("button", name="Acknowledge").click()
    page.locator("#alert-status", has_text="acknowledged").wait_for()
    alert_id = page.url.rsplit("/", 1)[-1]
    with server.client(keys["analyst"]) as c:
        stored = c.get(f"/v1/alerts/{alert_id}").json()
    assert stored["status"] == "acknowledged"
    assert stored["history"][-1]["actor"] == "key:ana"
    assert "acknowledge" in page.get_by_role("list", name="History and comments").inner_text()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{server.url}/signin")
    page.goto("/")
    assert page.url == f"{server.url}/signin?next=/"
    assert analyst.problems() == []


def test_comment_and_assign_from_the_alert_view(analyst: Session, dash: tuple[EmbeddedServer, dict[str, str]]) -> None:
    server, keys = dash
    customer, alert = risky_alert(dash)
    page = analyst.page
    page.goto(f"/alerts/{alert['id']}")
    page.get_by_role("textbox", name="Comment", exact=True).fill("called the customer: <b>not</b> them")
    page.get_by_role("button", name="Add comment").click()
    page.get_by_text("💬 called the customer: <b>not</b> them").wait_for()  # shown as text, not markup
    page.get_by_role("textbox", name="Assign to").fill("fraud-team-2")
    page.get_by_role("button", name="Assign", exact=True).click()
    page.locator(".facts", has_text="fraud-team-2").wait_for()
    with server.client(keys["analyst"]) as c:
        stored = c.get(f"/v1/alerts/{alert['id']}").json()
    assert stored["assignee"] == "fraud-team-2"
    assert stored["comments"][-1]["text"] == "called the customer: <b>not</b> them"

    page.get_by_role("textbox", name="Reason").last.fill("customer travelling, confirmed by phone")
    page.get_by_role("button", name="Silence similar").click()
    page.get_by_role("status").filter(has_text="Silenced").wait_for()
    with server.client(keys["analyst"]) as c:
        silences = c.get("/v1/silences").json()["items"]
    (silence,) = [x for x in silences if x["comment"] == "customer travelling, confirmed by phone"]
    assert silence["matchers"] == ['rule_id="transfer_high_risk_country"', f'customer_id="{customer}"']
    assert silence["created_by"] == "key:ana"
    assert analyst.problems() == []


def test_a_viewer_sees_the_alert_but_cannot_act_on_it(
    browser: Any, dash: tuple[EmbeddedServer, dict[str, str]]
) -> None:
    server, keys = dash
    _, alert = risky_alert(dash, "viewer")
    s = Session(browser, server)
    try:
        s.sign_in(keys["viewer"], f"/alerts/{alert['id']}")
        s.page.get_by_role("heading", name=re.compile("Transfer of")).wait_for()
        assert s.page.get_by_role("button", name="Acknowledge").is_disabled()
        assert s.page.get_by_role("button", name="Resolve").is_disabled()
        assert "may read alerts but not change them" in s.page.inner_text("main")
    finally:
        s.close()


def test_customer_operations_and_rules_views(
    analyst: Session, dash: tuple[EmbeddedServer, dict[str, str]], screenshots: Path
) -> None:
    server, keys = dash
    customer = uid("cus")
    post(
        server,
        keys["producer"],
        [
            event("login.succeeded", customer_id=customer),
            risky_transfer(customer),
            {"type": "not.an.event"},
            event("transfer.initiated", customer_id=uid("cus"), amount="25.00", currency="CHF"),  # no FX rate
        ],
    )
    server.wait_processed(keys["analyst"])
    page = analyst.page

    page.goto("/customers")
    page.get_by_label("Customer id").fill(customer)
    page.get_by_role("button", name="Show").click()
    page.get_by_role("region", name="Recent events").get_by_text("transfer.initiated").wait_for()
    assert page.get_by_role("region", name="Recent events").get_by_text("login.succeeded").is_visible()
    assert page.get_by_role("region", name="Alerts").get_by_role("link", name=re.compile("Transfer of")).is_visible()
    assert page.get_by_role("region", name="Current features").locator("tbody tr").count() > 0
    page.screenshot(path=screenshots / "customer.png", full_page=True)

    page.goto("/operations")
    page.locator("figure.chart-box").first.wait_for()
    assert page.locator("svg.chart polyline, svg.chart line").count() > 0
    assert page.get_by_role("img", name=re.compile("^Dead letters")).is_visible()
    assert page.get_by_role("img", name=re.compile("^Rejected and late events per second")).is_visible()
    assert int(page.locator("#t-rejected").inner_text().replace(",", "")) >= 1
    money = page.get_by_role("region", name="Money")  # the FX rates: an amount with none is counted
    assert "Reference currency" in money.inner_text()
    assert "EUR" in money.inner_text()
    assert int(page.locator("#fx-missing").inner_text().replace(",", "")) >= 1
    points = "() => (document.querySelector('svg.chart polyline')?.getAttribute('points') || '').split(' ').length"
    before = page.evaluate(points)
    page.wait_for_function(f"() => ({points})() > {before}", timeout=LIVE_TIMEOUT_MS)  # redrawn with a new sample
    lag = page.get_by_role("img", name=re.compile("^Events behind, per partition"))
    assert lag.locator("rect.bar").count() == 8
    assert "partition 7 0" in (lag.get_attribute("aria-label") or "")
    page.screenshot(path=screenshots / "operations.png", full_page=True)

    page.goto("/rules")
    row = page.locator('tr[data-rule-id="transfer_high_risk_country"]')
    row.wait_for()
    live_last_hour = int(row.locator("td").nth(4).inner_text())
    assert live_last_hour >= 1
    assert page.locator("#pack-version").inner_text() == load_pack_file(None).version
    page.get_by_label("Candidate rule pack (YAML)").fill("version: x\nrules:\n  - id: broken\n    when: amount >\n")
    page.get_by_role("button", name="Validate").click()
    error = page.locator("#validation").get_by_role("alert")
    error.wait_for()
    assert "rules[0]" in error.inner_text()  # the error says where
    assert "severity" in error.inner_text()
    assert analyst.unlabelled_controls() == []
    page.screenshot(path=screenshots / "rules.png", full_page=True)
    assert analyst.problems(400) == []  # the invalid candidate pack's answer, and nothing else


def test_phone_width_has_no_horizontal_scroll_and_assets_are_all_local(
    browser: Any, dash: tuple[EmbeddedServer, dict[str, str]], screenshots: Path
) -> None:
    server, keys = dash
    s = Session(browser, server, width=390, height=844)
    try:
        s.sign_in(keys["analyst"])
        s.page.locator("#alert-list table, #alert-list p").first.wait_for()
        for path in ("/", "/operations", "/rules"):
            s.page.goto(path)
            s.page.wait_for_load_state("networkidle")
            width = s.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        s.page.goto("/")
        s.page.locator("#alert-list table").wait_for()
        s.page.screenshot(path=screenshots / "alerts-phone.png", full_page=True)
        assert s.outside == []
        assert s.problems() == []
    finally:
        s.close()
    assert httpx.get(f"{server.url}/static/app.css").status_code == 200


def test_a_bidi_override_in_shown_text_cannot_turn_it_around(
    analyst: Session, dash: tuple[EmbeddedServer, dict[str, str]]
) -> None:
    """ "\u202e24_suc" showed as "cus_42": the dashboard shows bidi embeddings, overrides and
    isolates as U+FFFD wherever it shows data (ids in events are refused them at ingest)."""
    server, keys = dash
    _, alert = risky_alert(dash)
    with server.client(keys["analyst"]) as c:
        answer = c.post(f"/v1/alerts/{alert['id']}/comments", json={"text": "payee \u202e24_suc\u202c checked"})
        assert answer.is_success, answer.text
    page = analyst.page
    page.goto(f"/alerts/{alert['id']}")
    page.get_by_text("payee \ufffd24_suc\ufffd checked").wait_for()
    assert "\u202e" not in page.locator("body").inner_text()
    assert analyst.problems() == []
