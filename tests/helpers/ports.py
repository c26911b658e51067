"""Free ports for the servers tests start, each pytest-xdist worker from a share of its own.

``free_port`` binds port 0, reads the port the kernel chose and closes it; the server binds it
later, a JVM seconds later. Two workers (scripts/test) could be handed one port in between, and
the loser's wait would find the other worker's server listening there. So a worker keeps only
ports of its share (the kernel hands out odd ones first, so the share is of ``port // 2``).
"""

from __future__ import annotations

import os
import socket

from ringfence.bench import servers


def _share() -> tuple[int, int]:
    """(this worker's index, the number of workers); (0, 1) outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return (int(worker[2:]), count) if worker.startswith("gw") else (0, 1)


def free_port() -> int:
    index, count = _share()
    passed: list[socket.socket] = []  # held open meanwhile, so the kernel moves on
    try:
        while True:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            if (port // 2) % count == index:
                s.close()
                return port
            passed.append(s)
    finally:
        for s in passed:
            s.close()


def share_free_ports() -> None:
    """Make every ``free_port`` of the suite this one: ringfence.bench.servers' own (its servers
    call it) and the name test modules import from it, which they take after this runs."""
    servers.free_port = free_port
