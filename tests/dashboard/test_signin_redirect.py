"""Sign-in returns only to a page of the dashboard: hostile ``next`` values (tab, CR, LF,
backslash, ``//``, ``javascript:``, encoded variants) keep a real Chromium on the origin,
whether the server drops them or the page's script meets them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server

# as they appear in the query string (already URL-encoded where a browser would encode them)
HOSTILE_NEXT = [
    "%2F%09%2Fevil.example%2Fphish",  # the assessment's: "/\t/evil.example/phish"
    "/%09/evil.example",
    "%2F%0D%2Fevil.example",
    "%2F%0A%2Fevil.example",
    "%2F%5Cevil.example",  # "/\evil.example"
    "%5C%5Cevil.example",
    "/%5C/evil.example",
    "//evil.example",
    "%2F%2Fevil.example",
    "///evil.example",
    "%20//evil.example",
    "%2F%E2%80%8B%2Fevil.example",  # a zero-width space
    "https://evil.example/",
    "https:evil.example",
    "javascript:alert(1)",
    "javascript%3Aalert%281%29",
    "%6A%61%76%61%73%63%72%69%70%74:alert(1)",
    "/%252F%252Fevil.example",
]


@pytest.fixture(scope="module")
def signin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, str]]:
    data_dir = tmp_path_factory.mktemp("signin") / "data"
    key = create_key(data_dir, "viewer", "alerts:read")
    server = start_server(data_dir, env={"RINGFENCE_SIGNIN_ATTEMPTS_PER_MIN": "10000"})
    yield server, key
    assert server.stop(), server.log_path.read_text()[-3000:]


def sign_in_from(browser: Any, server: EmbeddedServer, key: str, query: str, *, via_script: bool) -> str:
    """Sign in at ``/signin?next=...``; return the URL the browser lands on, and check no
    request ever left the server. ``via_script``: put ``next`` into the address after the
    server served the page, so the page's own check meets it."""
    context = browser.new_context(base_url=server.url)
    outside: list[str] = []
    context.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
    try:
        page = context.new_page()
        if via_script:
            page.goto("/signin")
            page.evaluate("q => history.replaceState(null, '', '/signin?next=' + q)", query)
        else:
            page.goto(f"/signin?next={query}")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"^(?!.*/signin)"), timeout=10_000)
        page.wait_for_load_state()
        assert outside == []
        return str(page.url)
    finally:
        context.close()


@pytest.mark.parametrize("via_script", [False, True], ids=["server", "script"])
@pytest.mark.parametrize("query", HOSTILE_NEXT)
def test_a_hostile_next_keeps_the_browser_on_the_dashboard(
    browser: Any, signin_server: tuple[EmbeddedServer, str], query: str, via_script: bool
) -> None:
    server, key = signin_server
    landed = sign_in_from(browser, server, key, query, via_script=via_script)
    assert urlsplit(landed).netloc == urlsplit(server.url).netloc
    assert landed == f"{server.url}/"


@pytest.mark.parametrize("via_script", [False, True], ids=["server", "script"])
def test_a_dashboard_page_as_next_is_where_sign_in_returns(
    browser: Any, signin_server: tuple[EmbeddedServer, str], via_script: bool
) -> None:
    server, key = signin_server
    assert sign_in_from(browser, server, key, "/rules", via_script=via_script) == f"{server.url}/rules"


@pytest.mark.parametrize("query", HOSTILE_NEXT)
def test_the_server_drops_a_hostile_next_from_the_sign_in_page(
    signin_server: tuple[EmbeddedServer, str], query: str
) -> None:
    server, _ = signin_server
    response = httpx.get(f"{server.url}/signin?next={query}")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


def test_the_server_keeps_a_dashboard_page_as_next(signin_server: tuple[EmbeddedServer, str], tmp_path: Path) -> None:
    server, _ = signin_server
    for path in ("/", "/operations", "/alerts/al_123", "/customers/cus%201"):
        assert httpx.get(f"{server.url}/signin", params={"next": path}).status_code == 200
