"""A key's many large requests in parallel must not hold another key's requests behind all of
them: validation takes turns key by key, on a real server. Found by a re-test: one key's 16
connections held every other producer's requests for a minute."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.testing import event

CONNECTIONS = 24


@pytest.fixture(params=["true", "false"], ids=["ingest-process", "ingest-in-server"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    srv = start_server(tmp_path / "data", env={"RINGFENCE_INGEST_PROCESS": request.param})
    yield srv
    srv.stop()


def large_body(tag: str) -> bytes:
    """10,000 events, each refused (a field no login has) after some 50 us of validation: half a
    second of the validating core a body, and nothing charged to the key's budget."""
    now = time.time()
    events = []
    for i in range(10_000):
        refused = event("login.failed", at=now, event_id=f"{tag}-{i}", customer_id=f"c-{i % 500}", ip="203.0.113.9")
        refused["data"]["note"] = "x" * 50
        events.append(json.dumps(refused))
    return "\n".join(events).encode()


@contextmanager
def flooding(server: EmbeddedServer, key: str, body: bytes, connections: int) -> Iterator[None]:
    """``connections`` requests of ``body`` at once, each on its own connection, hung up on at the
    end of the block: the server drops those still waiting (so the test does not wait for them)."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sockets = [socket.create_connection((host, int(port))) for _ in range(connections)]
    try:
        for s in sockets:
            s.sendall(head + body)
        yield
    finally:
        for s in sockets:
            s.close()


@pytest.mark.serial  # waits < 5 s
def test_another_keys_request_waits_for_one_turn_not_for_a_flood(server: EmbeddedServer) -> None:
    flood = create_key(server.data_dir, "flood", "events:write")
    other = create_key(server.data_dir, "other", "events:write")
    waits = []
    with flooding(server, flood, large_body("flood"), CONNECTIONS):  # every event refused: none a duplicate
        time.sleep(1.0)  # the flood's requests under way and waiting
        with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {other}"}) as c:
            for _ in range(6):
                started = time.monotonic()
                answer = c.post("/v1/events", json=[event("card.authorization", event_id=uuid.uuid4().hex)])
                waits.append(time.monotonic() - started)
                assert answer.status_code == 202, answer.text
                time.sleep(0.3)
    # first come first served, a request waited behind the flood's 24 bodies (15 s here)
    assert max(waits) < 5.0, waits
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {other}"}) as c:
        assert c.get("/healthz").status_code == 200


def test_a_request_whose_client_left_while_it_waited_is_not_ingested(server: EmbeddedServer) -> None:
    flood = create_key(server.data_dir, "flood", "events:write")
    headers = {"Authorization": f"Bearer {flood}", "Content-Type": "application/x-ndjson"}
    body = large_body("flood")

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            c.post("/v1/events", content=body, headers=headers)

    threads = [threading.Thread(target=send) for _ in range(6)]  # its line: 3 s of validation
    for t in threads:
        t.start()
    time.sleep(0.5)
    # the flooding key's own: it waits in that key's line, behind its other requests
    now = time.time()
    left = "\n".join(
        json.dumps(event("login.failed", at=now, event_id=f"left-{i}", ip="203.0.113.7")) for i in range(10_000)
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:  # sends its request, then hangs up
        s.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            + f"Authorization: Bearer {flood}\r\nContent-Length: {len(left)}\r\n\r\n".encode()
            + left.encode()
        )
        time.sleep(0.05)
    for t in threads:
        t.join(180)
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {flood}"}) as c:
        again = c.post("/v1/events", content=left, headers={"Content-Type": "application/x-ndjson"})
    assert again.status_code == 202, again.text
    assert again.json()["accepted"] == 10_000  # the first was dropped unread, not taken
