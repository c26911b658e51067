"""Login CSRF: another site's page cannot sign a victim's browser in as the attacker's key
(a form posting ``text/plain`` whose body reads as JSON is a top-level navigation, whose
session cookie a browser keeps even SameSite=Strict). Real Chromium, real server; the other
site is ``localhost`` on a port of its own, a different site from ``127.0.0.1``."""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from tests.helpers.browser import Session


@pytest.fixture(scope="module")
def victim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("login-csrf") / "data"
    keys = {
        "victim": create_key(data_dir, "victim-admin", "admin"),
        "attacker": create_key(data_dir, "attacker-viewer", "alerts:read"),
    }
    server = start_server(data_dir)
    yield server, keys
    assert server.stop(), server.log_path.read_text()[-3000:]


def attacker_site(page_html: str) -> tuple[ThreadingHTTPServer, str]:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page_html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site, f"http://localhost:{site.server_address[1]}/"


def test_another_sites_form_cannot_sign_the_victim_in_as_the_attacker(
    browser: Any, victim_server: tuple[EmbeddedServer, dict[str, str]]
) -> None:
    server, keys = victim_server
    # the attacker's key split across a form field's name and value: {"key":"=","key":"rf_..."}
    name = html.escape('{"key":"', quote=True)
    value = html.escape(f'","key":{json.dumps(keys["attacker"])}}}', quote=True)
    form = (
        f'<form id="f" method="POST" action="{server.url}/v1/session" enctype="text/plain">'
        f'<input type="hidden" name="{name}" value="{value}"></form><script>f.submit()</script>'
    )
    site, url = attacker_site(form)
    session = Session(browser, server)
    try:
        session.sign_in(keys["victim"])
        before = {c["name"]: c["value"] for c in session.context.cookies()}
        assert before.get("rf_session")
        evil = session.context.new_page()
        with evil.expect_response(f"{server.url}/v1/session") as answered:
            evil.goto(url)
        assert answered.value.status in (403, 415)  # what a navigation from another site gets
        after = {c["name"]: c["value"] for c in session.context.cookies()}
        assert after == before  # the victim's session, untouched
        who = session.page.evaluate("() => fetch('/v1/session').then(r => r.json())")
        assert who["name"] == "victim-admin"
    finally:
        session.close()
        site.shutdown()
        site.server_close()


def test_sign_in_takes_json_only_and_not_from_another_site(
    victim_server: tuple[EmbeddedServer, dict[str, str]],
) -> None:
    server, keys = victim_server
    body = json.dumps({"key": keys["attacker"]})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        as_text = client.post("/v1/session", content=body, headers={"Content-Type": "text/plain"})
        assert as_text.status_code == 415
        assert "set-cookie" not in as_text.headers
        unlabelled = client.post("/v1/session", content=body)
        assert unlabelled.status_code == 415
        for site in ("cross-site", "same-site"):
            refused = client.post(
                "/v1/session", content=body, headers={"Content-Type": "application/json", "Sec-Fetch-Site": site}
            )
            assert refused.status_code == 403, site
            assert refused.json()["error"]["code"] == "cross_site"
            assert "set-cookie" not in refused.headers
        own_page = client.post(
            "/v1/session", content=body, headers={"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"}
        )
        assert own_page.status_code == 201
        assert client.post("/v1/session", json={"key": keys["attacker"]}).status_code == 201  # a script, no browser
