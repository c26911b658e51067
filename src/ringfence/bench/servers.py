"""Launchers of real Ringfence processes on free ports: ``ringfence up`` servers and CLI
calls, for the end-to-end benchmarks and the test suite."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess  # nosec B404
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


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


def post_events(client: httpx.Client, body: bytes) -> dict[str, Any]:
    """POST an NDJSON batch until it is accepted, waiting out backpressure (429/503 and their
    ``Retry-After``) as a producer does; the 202's answer. Raises on any other answer."""
    while True:
        response = client.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
        if response.status_code in (429, 503):
            time.sleep(float(response.headers.get("retry-after", "1")))
            continue
        if response.status_code != 202:
            raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:500]}")
        answer: dict[str, Any] = response.json()
        return answer


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

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

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

    def alerts(self, key: str) -> Iterator[dict[str, Any]]:
        """Every alert, paged through ``GET /v1/alerts``."""
        cursor = None
        with self.client(key) as c:
            while True:
                params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
                page = c.get("/v1/alerts", params=params).json()
                yield from page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    return

    def wait_processed(self, key: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the processor has caught up with the log; return /readyz."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        with self.client(key) as c:
            while True:
                try:
                    body = c.get("/readyz").json()
                except httpx.TransportError:  # a connection a busy server dropped; not if it died
                    if self.process.poll() is not None:
                        raise
                else:
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
def run_embedded(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[EmbeddedServer]:
    """A real embedded server for the duration of the block (``env``: added to this process's)."""
    server = start_server(data_dir, *extra, env=env)
    try:
        yield server
    finally:
        server.stop()
