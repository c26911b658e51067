"""A server's child processes, read from Linux /proc."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ringfence.bench import procstat


def children(pid: int) -> set[int]:
    """The live descendants of ``pid``."""
    return set(procstat.tree(pid)) - {pid}


def ingest_workers(pid: int) -> set[int]:
    """The children that are multiprocessing workers (not its resource tracker)."""
    found = set()
    for child in children(pid):
        with contextlib.suppress(FileNotFoundError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(child)
    return found
