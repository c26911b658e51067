"""The operations view shows quarantined (poison) events: the count to every reader, the latest
entries and a re-drive button to admins only (issue 15, item 1), in a real Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from tests.helpers import quarantine as q
from tests.helpers.browser import LIVE_TIMEOUT_MS, Session


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("dashboard-quarantine") / "data"
    keys = {
        "admin": create_key(data_dir, "adm", "admin"),
        "viewer": create_key(data_dir, "vic", "alerts:read"),
        "producer": create_key(data_dir, "producer", "events:write"),
    }
    server = start_server(data_dir, env=q.REFERENCE)
    with server.client(keys["admin"]) as c:
        assert c.put("/v1/rules", content=q.PACK.format(version="acme-1", of=q.KEPT), headers=q.YAML).is_success
    assert server.stop(), server.log_path.read_text()[-3000:]
    q.write_around_ingest(data_dir, "cus_p", "d-poison")
    server = start_server(data_dir, env=q.REFERENCE)
    q.post_accepted(server, keys["producer"], q.score("cus_a", "d-1", 50, 1))
    server.wait_processed(keys["viewer"], timeout=30)
    yield server, keys
    assert server.stop(), server.log_path.read_text()[-3000:]


def test_an_admin_sees_the_poison_event_and_redrives_it_after_a_fix(
    browser: Any, poisoned: tuple[EmbeddedServer, dict[str, str]]
) -> None:
    server, keys = poisoned
    s = Session(browser, server)
    try:
        s.sign_in(keys["admin"], "/operations")
        region = s.page.get_by_role("region", name="Quarantined events")
        region.get_by_text("acme / d-poison").wait_for()
        assert s.page.locator("#t-quarantined").inner_text() == "1"
        assert re.search(r"OverflowError", region.inner_text())
        with server.client(keys["admin"]) as c:
            assert c.put("/v1/rules", content=q.PACK.format(version="acme-2", of=q.FIXED), headers=q.YAML).is_success
        region.get_by_role("button", name="Re-drive").click()
        region.get_by_text("redriven").wait_for(timeout=LIVE_TIMEOUT_MS)
        assert "d-poison" in q.alerted(server, keys["viewer"])
        assert s.problems() == []
    finally:
        s.close()


def test_a_reader_sees_the_count_but_not_the_entries(
    browser: Any, poisoned: tuple[EmbeddedServer, dict[str, str]]
) -> None:
    server, keys = poisoned
    s = Session(browser, server)
    try:
        s.sign_in(keys["viewer"], "/operations")
        region = s.page.get_by_role("region", name="Quarantined events")
        region.get_by_text("Listing them needs an admin key.").wait_for()
        assert "d-poison" not in region.inner_text()
        assert re.search(r"\d quarantined", s.page.locator("#quarantine-counts").inner_text())
        assert s.problems() == []
    finally:
        s.close()
