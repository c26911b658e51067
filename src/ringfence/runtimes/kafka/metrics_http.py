"""``/metrics`` of a process or dispatch service (``--metrics-port``), for Prometheus.

Authenticated as the API's is: a bearer API key with ``alerts:read`` that sees every audience
(the counts by receiver and rule are every desk's), checked against the store, so a scrape
config holds a key and nothing is open to the network.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from ringfence.errors import AuthError, ForbiddenError
from ringfence.metrics import Metrics
from ringfence.store.keys import ApiKeys


def serve_metrics(metrics: Metrics, keys: ApiKeys, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``GET /metrics`` on ``host:port`` from a daemon thread; return the server."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "ringfence"
        sys_version = ""
        timeout = 5.0  # a connection that sends nothing is closed: an idle one holds a thread

        def do_GET(self) -> None:
            if self.path != "/metrics":
                self._answer(404, b"not found\n")
                return
            kind, _, token = self.headers.get("authorization", "").partition(" ")
            try:
                if kind.lower() != "bearer" or not token.strip():
                    raise AuthError("missing API key")
                key = keys.authenticate(token.strip(), time.time())
                ApiKeys.require(key, "alerts:read")
                if not key.unrestricted:  # counts by receiver and rule are every desk's
                    raise ForbiddenError("a key that sees every audience")
            except ForbiddenError:
                self._answer(403, b"this key may not read metrics\n")
                return
            except AuthError:
                self._answer(401, b"send 'Authorization: Bearer <key>' with alerts:read\n")
                return
            self._answer(200, metrics.render(), CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # scrapes are not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
