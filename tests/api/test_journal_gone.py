"""A journal segment deleted under a running server (by hand, a careless clean-up): ingest
stops acknowledging at once, since the appends would go into the unlinked file and be lost,
and readiness says why."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.clock import iso
from ringfence.testing import event


@pytest.fixture(params=["true", "false"], ids=["ingest-process", "ingest-in-server"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    srv = start_server(tmp_path / "data", env={"RINGFENCE_INGEST_PROCESS": request.param})
    yield srv
    srv.stop()


def post(server: EmbeddedServer, key: str, event_id: str) -> httpx.Response:
    body = json.dumps([event("card.authorization", at=time.time(), event_id=event_id)])
    return httpx.post(
        f"{server.url}/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=10,
    )


def ready(server: EmbeddedServer, key: str) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_a_segment_deleted_under_the_server_takes_no_event_and_readiness_says_why(server: EmbeddedServer) -> None:
    producer = create_key(server.data_dir, "producer", "events:write")
    reader = create_key(server.data_dir, "reader", "alerts:read")
    assert post(server, producer, "e-1").status_code == 202
    assert ready(server, reader).status_code == 200  # its thread holds the segment open from now
    for path in server.data_dir.glob("journal-*.sqlite3*"):
        path.unlink()

    refused = post(server, producer, "e-2")
    assert refused.status_code == 503
    assert "was deleted or replaced under the server" in refused.json()["error"]["message"]
    answer = ready(server, reader)
    assert answer.status_code == 503
    assert answer.json()["ready"] is False
    assert "journal segment" in answer.json()["reason"]


def test_a_store_deleted_under_the_server_answers_its_writes_503_not_409(server: EmbeddedServer) -> None:
    """A file gone under the server is not the request's fault: a client may try again later."""
    admin = create_key(server.data_dir, "admin", "admin")
    for path in server.data_dir.glob("store.sqlite3*"):
        if "anchor" not in path.name:
            path.unlink()
    silence = {"matchers": ["customer_id=cus_1"], "ends_at": iso(time.time() + 3600), "comment": "maintenance"}
    answer = httpx.post(
        f"{server.url}/v1/silences", json=silence, headers={"Authorization": f"Bearer {admin}"}, timeout=10
    )
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "unavailable"
    assert answer.json()["error"]["message"] == "store.sqlite3 was deleted or replaced under the server: restart it"
    assert str(server.data_dir) not in answer.text  # no path of the host to a caller


def test_a_store_gone_under_the_server_makes_it_unready_once_its_processor_keeps_failing(
    server: EmbeddedServer,
) -> None:
    """Events are still taken (the journal keeps them) but none is processed: a balancer must
    send them elsewhere, so readiness says so, and why."""
    producer = create_key(server.data_dir, "producer", "events:write")
    reader = create_key(server.data_dir, "reader", "alerts:read")
    assert ready(server, reader).status_code == 200
    for path in server.data_dir.glob("store.sqlite3*"):
        path.unlink()
    assert post(server, producer, "e-1").status_code == 202  # kept in the journal, to process later
    deadline = time.monotonic() + 30
    while (answer := ready(server, reader)).status_code == 200:
        assert time.monotonic() < deadline, answer.json()
        time.sleep(0.5)
    assert answer.status_code == 503
    assert answer.json()["ready"] is False
    assert "the processor has failed for" in answer.json()["reason"]
    assert answer.json()["lag_events"] >= 1
