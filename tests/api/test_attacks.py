"""Attacking the running server over real HTTP: object-level access, sessions and CSRF,
header injection, malformed input, TLS. Each attack gets its 4xx and the server stays
healthy and keeps processing."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, free_port, ringfence_cli
from ringfence.testing import event
from tests.helpers.http import alerts_for, post, risky_transfer, uid
from tests.helpers.keys import Keys
from tests.helpers.tls import self_signed


def limited_key(server: EmbeddedServer, name: str, *audiences: str) -> str:
    args = ["keys", "create", "--name", name, "--role", "analyst"]
    for audience in audiences:
        args += ["--audience", audience]
    return ringfence_cli(*args, data_dir=server.data_dir).stdout.strip().splitlines()[-1]


def test_a_key_limited_to_an_audience_cannot_see_or_touch_other_alerts(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    post(server, keys.producer, risky_transfer(customer))  # an aml alert
    server.wait_processed(keys.reader)
    (aml,) = alerts_for(server, keys.reader, customer)
    assert aml["audience"] == "aml"
    fraud_only = limited_key(server, uid("fraud-analyst"), "fraud")
    with server.client(fraud_only) as c:
        assert c.get(f"/v1/alerts/{aml['id']}").status_code == 404  # not even its existence
        for action in ("ack", "resolve"):
            assert c.post(f"/v1/alerts/{aml['id']}/{action}").status_code == 404
        assert c.post(f"/v1/alerts/{aml['id']}/comments", json={"text": "x"}).status_code == 404
        assert c.get("/v1/alerts", params={"customer_id": customer}).json()["items"] == []
        assert c.get("/v1/alerts", params={"customer_id": customer, "audience": "aml"}).json()["items"] == []
        assert (
            c.post(
                "/v1/silences", json={"matchers": ["a=b"], "ends_at": "2999-01-01T00:00:00Z", "comment": "x"}
            ).status_code
            == 403
        )
        assert c.get("/v1/notifications").status_code == 403
    aml_only = limited_key(server, uid("aml-analyst"), "aml")
    with server.client(aml_only) as c:
        assert c.get(f"/v1/alerts/{aml['id']}").status_code == 200
        assert c.post(f"/v1/alerts/{aml['id']}/ack").status_code == 200


def test_roles_map_to_scopes(server: EmbeddedServer) -> None:
    viewer = (
        ringfence_cli("keys", "create", "--name", uid("viewer"), "--role", "viewer", data_dir=server.data_dir)
        .stdout.strip()
        .splitlines()[-1]
    )
    with server.client(viewer) as c:
        assert c.get("/v1/alerts").status_code == 200
        assert c.get("/v1/rules").status_code == 200
        assert c.post("/v1/alerts/al_x/ack").status_code == 403
        assert c.post("/v1/events", json=[event()]).status_code == 403
    bad = ringfence_cli("keys", "create", "--name", "x", "--role", "god", data_dir=server.data_dir, check=False)
    assert bad.returncode == 2
    assert "unknown role 'god'" in bad.stderr


def test_a_session_cookie_is_hardened_and_state_changes_need_the_csrf_token(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    post(server, keys.producer, risky_transfer(customer))
    server.wait_processed(keys.reader)
    (alert,) = alerts_for(server, keys.reader, customer)
    with httpx.Client(base_url=server.url) as browser:
        assert browser.post("/v1/session", json={"key": "rf_nope"}).status_code == 401
        signed_in = browser.post("/v1/session", json={"key": keys.analyst})
        assert signed_in.status_code == 201
        cookie = signed_in.headers["set-cookie"]
        for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower()
        csrf = signed_in.json()["csrf_token"]
        session_id = cookie.split(";")[0].split("=", 1)[1]
    # the cookie is Secure, so a client on plain http must be handed it
    with httpx.Client(base_url=server.url, cookies={"rf_session": session_id}) as browser:
        assert browser.get("/v1/alerts").status_code == 200  # reads need no token
        forged = browser.post(f"/v1/alerts/{alert['id']}/ack")  # a cross-site form post
        assert forged.status_code == 403
        assert "CSRF" in forged.json()["error"]["message"]
        wrong = browser.post(f"/v1/alerts/{alert['id']}/ack", headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        ok = browser.post(f"/v1/alerts/{alert['id']}/ack", headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200
        assert ok.json()["history"][-1]["actor"] == "key:analyst"
        assert browser.request("DELETE", "/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert browser.get("/v1/alerts").status_code == 401  # signed out
    with server.client(keys.admin) as c:
        actions = [e["action"] for e in c.get("/v1/audit").json()["items"]]
    assert "session.login" in actions
    assert "session.logout" in actions


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": "Bearer " + "A" * 10_000}, 401),
        ({"Authorization": "Bearer rf_000000000000_" + "A" * 43 + "\x00"}, 401),
        ({"Content-Type": "application/json; charset=utf-8\r\nX-Injected: 1"}, None),
    ],
)
def test_hostile_headers_are_refused(
    server: EmbeddedServer, keys: Keys, headers: dict[str, str], status: int | None
) -> None:
    try:
        response = httpx.post(
            f"{server.url}/v1/events", content=b"[]", headers={"Authorization": f"Bearer {keys.producer}", **headers}
        )
    except (httpx.LocalProtocolError, ValueError):
        return  # the client itself refuses to send a header with CR/LF; nothing reached the server
    assert response.status_code in ((status,) if status else (400, 401, 415))
    assert "x-injected" not in response.headers


@pytest.mark.parametrize(
    "body",
    [
        b'[{"event_id": "\xff\xfe", "type": "login.failed"}]',  # malformed UTF-8
        b'[{"event_id": "e", "amount": NaN}]',
        b'[{"event_id": "e", "amount": Infinity}]',
        b"[" * 100_000,
        b'{"event_id": "' + b"x" * 70_000 + b'"}',
    ],
)
def test_malformed_bodies_get_400_and_the_server_stays_healthy(server: EmbeddedServer, keys: Keys, body: bytes) -> None:
    response = post(server, keys.producer, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("malformed_body", "invalid_events")
    assert httpx.get(f"{server.url}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"occurred_at": "0001-01-01T00:00:00Z"}, "occurred_at"),
        ({"occurred_at": "9999-12-31T23:59:59Z"}, "occurred_at"),
        ({"occurred_at": "2026-02-30T00:00:00Z"}, "occurred_at"),
        (
            {
                "data": {
                    "card_id": "t",
                    "amount": 10**40,
                    "currency": "EUR",
                    "merchant": {"id": "m", "mcc": "5411", "country": "FR"},
                    "channel": "pos",
                    "approved": True,
                }
            },
            "data.amount",
        ),
    ],
)
def test_extreme_values_are_per_event_errors(
    server: EmbeddedServer, keys: Keys, change: dict[str, object], field: str
) -> None:
    response = post(server, keys.producer, [{**event(), **change}, event("login.failed")])
    assert response.status_code == 202
    (rejected,) = response.json()["rejected"]
    assert rejected["errors"][0]["field"] == field


def test_logs_hold_no_secret_and_no_account_number(server: EmbeddedServer, keys: Keys) -> None:
    iban = "GB82WEST12345698765432"
    post(server, keys.producer, [event("payee.added", payee_id="p", payee_country="GB", payee_account=iban)])
    post(server, keys.producer, b"{broken")
    httpx.get(f"{server.url}/v1/alerts", headers={"Authorization": f"Bearer {keys.admin}x"})
    server.wait_processed(keys.reader)
    log = server.log_path.read_text()
    for secret in (keys.admin, keys.producer, keys.admin.split("_", 2)[2], iban):
        assert secret not in log
    stored = b"".join(path.read_bytes() for path in server.data_dir.glob("*.sqlite3*"))  # segments, WALs too
    assert iban.encode() not in stored


def test_tls_when_a_certificate_is_configured_with_hsts(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    data_dir = tmp_path / "d"
    admin = create_key(data_dir, "admin", "admin")
    port = free_port()
    env = {"RINGFENCE_TLS_CERT": str(cert), "RINGFENCE_TLS_KEY": str(key)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ringfence", "up", "--data-dir", str(data_dir), "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(
                    f"https://127.0.0.1:{port}/readyz",
                    headers={"Authorization": f"Bearer {admin}"},
                    verify=ssl.create_default_context(cafile=str(cert)),
                )
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)  # no plain HTTP on a TLS port
    finally:
        process.terminate()
        process.wait(30)


def test_the_server_is_still_healthy_and_processing_after_the_attacks(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    post(server, keys.producer, risky_transfer(customer))
    server.wait_processed(keys.reader)
    assert alerts_for(server, keys.reader, customer)
    assert json.loads(httpx.get(f"{server.url}/healthz").text) == {"status": "ok"}
