"""Test helpers for Ringfence and for users' own tests of their rule packs and producers.

``FixedClock`` makes time explicit; ``event`` builds valid v1 events with defaults;
``run_embedded`` starts a real embedded server (its own process) on a free port.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess  # nosec B404
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from ringfence.simulate.traffic import iso

_ids = itertools.count(1)


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def event(
    type_: str = "card.authorization",
    *,
    at: float | None = None,
    customer_id: str | None = "cus_1",
    source: str = "test",
    event_id: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A valid v1 event as a producer sends it; ``data`` overrides the type's defaults."""
    defaults: dict[str, dict[str, Any]] = {
        "card.authorization": {
            "card_id": "tok_1",
            "amount": "12.50",
            "currency": "EUR",
            "merchant": {"id": "mer_1", "mcc": "5411", "country": "FR"},
            "channel": "pos",
            "approved": True,
        },
        "login.succeeded": {"device_id": "dev_1", "ip": "192.0.2.1"},
        "login.failed": {"device_id": "dev_1", "ip": "192.0.2.1"},
        "transfer.initiated": {"amount": "100.00", "currency": "EUR", "payee_id": "pay_1"},
        "balance.updated": {"balance": "500.00", "currency": "EUR"},
        "deposit.received": {"amount": "100.00", "currency": "EUR", "method": "transfer"},
        "payee.added": {"payee_id": "pay_1", "payee_country": "GB"},
        "api.request": {"service": "payments", "endpoint": "/transfers", "status": 200, "latency_ms": 12.0},
    }
    body: dict[str, Any] = {
        "event_id": event_id or f"evt-{next(_ids):09d}",
        "type": type_,
        "occurred_at": iso(at if at is not None else time.time()),
        "source": source,
        "data": {**defaults.get(type_, {}), **data},
    }
    if customer_id is not None:
        body["customer_id"] = customer_id
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ringfence_cli(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the ``ringfence`` command in a subprocess (as a user would)."""
    return subprocess.run(  # nosec B603 # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "ringfence", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def create_key(data_dir: Path, name: str, *scopes: str) -> str:
    """Create an API key with the CLI and return it (the last line of stdout)."""
    out = ringfence_cli(
        "keys",
        "create",
        "--name",
        name,
        *itertools.chain.from_iterable(("--scope", s) for s in scopes),
        data_dir=data_dir,
    )
    return out.stdout.strip().splitlines()[-1]


@dataclass
class EmbeddedServer:
    """A running ``ringfence up`` process."""

    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def kill(self) -> None:
        """kill -9: no shutdown hooks run."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> bool:
        """SIGTERM, and wait; True if the platform shut down cleanly (it logs that last)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        # uvicorn re-raises SIGTERM after a graceful shutdown, so the exit code is -15
        return (
            self.process.returncode in (0, -signal.SIGTERM) and "embedded platform stopped" in self.log_path.read_text()
        )

    def wait_processed(self, key: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the processor has caught up with the log; return /readyz."""
        deadline = time.monotonic() + timeout
        with self.client(key) as c:
            while True:
                body: dict[str, Any] = c.get("/readyz").json()
                if body.get("ready") and body["processed_offset"] >= body["log_head"]:
                    return body
                if time.monotonic() > deadline:
                    raise TimeoutError(f"processor did not catch up: {body}")
                time.sleep(0.05)


def start_server(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> EmbeddedServer:
    """Start ``ringfence up`` on a free port and wait until it answers /healthz."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = data_dir.parent / f"{data_dir.name}-server-{port}.log"
    with log_path.open("ab") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(  # nosec B603 # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "ringfence", "up", "--data-dir", str(data_dir), "--port", str(port), *extra],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, process, log_path, "ringfence up")
    return EmbeddedServer(process, url, data_dir, log_path)


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path, name: str) -> None:
    """Wait until a started server answers ``/healthz``; raise with its log if it dies or stalls."""
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"{name} did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.05)


@contextmanager
def run_embedded(data_dir: Path, *extra: str) -> Iterator[EmbeddedServer]:
    """A real embedded server for the duration of the block."""
    server = start_server(data_dir, *extra)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Received:
    """One request a :class:`RecordingReceiver` got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RecordingReceiver:
    """A real HTTP server on 127.0.0.1 that records what it receives, for webhook tests.

    ``statuses`` are answered in order (then 200 for ever), e.g. ``[503, 503]`` to fail twice.
    """

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    retry_after: str | None = None

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = recorder.statuses.pop(0) if recorder.statuses else 200
                recorder.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                if recorder.retry_after and status in (429, 503):
                    self.send_header("Retry-After", recorder.retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"got {len(self.received)} requests, expected {count}")
            time.sleep(0.02)
        return self.received
