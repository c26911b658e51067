"""A real HTTP receiver that records what it gets, for notification tests."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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

    ``statuses`` are answered in order (then 200 for ever), e.g. ``[503, 503]`` to fail twice;
    ``holds``, in order too, are events a request waits for (up to 10 s) before it is answered.
    """

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    retry_after: str | None = None
    holds: list[threading.Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = recorder.statuses.pop(0) if recorder.statuses else 200
                recorder.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if recorder.holds:
                    recorder.holds.pop(0).wait(10.0)
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
        # a short poll: close() returns within 50 ms instead of 0.5 s
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

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
