"""``ringfence up`` stopping under load: what waits is answered 503 at once, never 500.

uvicorn gives requests under way a grace period (10 s), then cancels what is left and answers
those 500. Requests waiting for their turn at ingest, live streams and back-tests held the stop
that long and then got the 500 (63 of 150 ingest requests, in a test of a stop under load).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import create_key, start_server
from ringfence.testing import event


def ndjson_body(key: int, events: int) -> bytes:
    at = time.time()
    lines = (
        json.dumps(event("login.succeeded", at=at, customer_id=f"cus_{i % 97}", source="web", event_id=f"{key}-{i}"))
        for i in range(events)
    )
    return "\n".join(lines).encode()


@pytest.mark.serial  # a stop < 8 s
def test_a_stop_under_load_answers_waiting_requests_503_and_ends_live_streams(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    producers = [create_key(data_dir, f"p{i}", "events:write") for i in range(3)]
    analyst = create_key(data_dir, "a", "alerts:read")
    server = start_server(data_dir)
    stream_lines: list[str] = []

    def read_stream() -> None:
        with (
            httpx.Client(base_url=server.url, timeout=30) as client,
            client.stream("GET", "/v1/alerts/stream", headers={"Authorization": f"Bearer {analyst}"}) as response,
        ):
            stream_lines.extend(response.iter_lines())

    async def flood() -> list[tuple[int, str]]:
        bodies = [(producers[i % 3], ndjson_body(i, 8_000)) for i in range(24)]  # about 2 MB each
        answers: list[tuple[int, str]] = []
        stopped = False
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def post(key: str, body: bytes) -> None:
                nonlocal stopped
                response = await client.post(
                    "/v1/events",
                    content=body,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"},
                )
                answers.append((response.status_code, response.text))
                if not stopped:  # the first answer: the others are validated or wait their turn
                    stopped = True
                    server.process.terminate()

            await asyncio.gather(*(post(key, body) for key, body in bodies))
        return answers

    streamer = threading.Thread(target=read_stream)
    streamer.start()
    try:
        time.sleep(0.5)  # the stream is open
        answers = asyncio.run(flood())
        began = time.monotonic()
        server.process.wait(timeout=30)
        took = time.monotonic() - began
        streamer.join(timeout=30)
    finally:
        server.stop()
    statuses = sorted(status for status, _ in answers)
    assert set(statuses) <= {202, 503}, answers
    assert 503 in statuses, statuses  # some waited their turn when the stop began
    refused = [text for status, text in answers if status == 503]
    assert all("ingest is stopping" in text for text in refused), refused
    assert took < 8, f"the stop took {took:.1f} s: something waited for the grace period"
    assert 'data: {"reason": "the server is stopping"}' in stream_lines, stream_lines
    log = server.log_path.read_text()
    assert "Exception in ASGI application" not in log, log[-3000:]
    assert "embedded platform stopped" in log


@pytest.mark.serial  # a stop < 8 s
def test_a_stop_while_a_body_is_still_arriving_answers_it_503_at_once(tmp_path: Path) -> None:
    """A re-test: a producer's body still arriving held the stop for the grace period, which
    then cancelled the request: 500."""
    data_dir = tmp_path / "d"
    producer = create_key(data_dir, "p", "events:write")
    server = start_server(data_dir)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(
                f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {producer}\r\n"
                "Content-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n".encode()
                + b'{"event_id": "slow-1", "type": "login.succeeded", '
            )
            time.sleep(0.5)  # the request is reading its body
            began = time.monotonic()
            server.process.terminate()
            answer = b""
            while not answer.endswith(b"}") and (chunk := s.recv(4096)):
                answer += chunk
        server.process.wait(timeout=30)
        took = time.monotonic() - began
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
    assert b"the server is stopping" in answer
    assert took < 8, f"the stop took {took:.1f} s"
    assert "Exception in ASGI application" not in server.log_path.read_text()
