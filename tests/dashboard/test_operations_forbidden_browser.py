"""The operations view for a key limited to some desks: ``/v1/stats`` counts every desk's
alerts (403), so the view says which key it needs instead of breaking (issue 16, item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ringfence.bench.servers import ringfence_cli, start_server
from tests.helpers.browser import Session


def test_a_desk_limited_key_is_told_the_operations_view_needs_a_key_that_sees_every_desk(
    browser: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    created = ringfence_cli(
        "keys", "create", "--name", "fraud-desk", "--role", "analyst", "--audience", "fraud", data_dir=data_dir
    )
    key = created.stdout.strip().splitlines()[-1]
    server = start_server(data_dir)
    try:
        session = Session(browser, server)
        try:
            session.sign_in(key, "/operations")
            notice = session.page.locator("#ops-forbidden")
            notice.wait_for()
            assert "needs a key that sees every desk" in notice.inner_text()
            assert session.page.locator("figure.chart-box").count() == 0
            assert session.problems(403) == []
        finally:
            session.close()
    finally:
        assert server.stop(), server.log_path.read_text()[-3000:]
