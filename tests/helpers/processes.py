"""A server's child processes, read from Linux /proc."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from ringfence.bench import procstat
from ringfence.runtimes.embedded.data_dir import JOURNAL_FILE, STORE_FILE

STARTUP_S = 10.0  # a worker just started opens its file within this long


def children(pid: int) -> set[int]:
    """The live descendants of ``pid``."""
    return set(procstat.tree(pid)) - {pid}


def workers(pid: int) -> set[int]:
    """The children that are multiprocessing workers (not its resource tracker), zombies left out."""
    found = set()
    for child in children(pid):
        with contextlib.suppress(FileNotFoundError):
            stat = Path(f"/proc/{child}/stat").read_text()
            if (
                stat.rsplit(")", 1)[1].split()[0] != "Z"
                and b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
            ):
                found.add(child)
    return found


def _open_files(pid: int) -> set[str]:
    names = set()
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):
                names.add(os.readlink(fd).rsplit("/", 1)[-1])
    return names


def _workers_by_kind(pid: int) -> dict[int, str]:
    """Each worker's kind: ``ingest`` writes the journal, ``dispatch`` has only the store open.
    Waits until every worker has opened its file (they do so first thing)."""
    deadline = time.monotonic() + STARTUP_S
    while True:
        kinds = {}
        for worker in workers(pid):
            files = _open_files(worker)
            kinds[worker] = "ingest" if JOURNAL_FILE in files else "dispatch" if STORE_FILE in files else ""
        if all(kinds.values()) or time.monotonic() > deadline:
            return kinds
        time.sleep(0.05)


def ingest_workers(pid: int) -> set[int]:
    return {w for w, kind in _workers_by_kind(pid).items() if kind == "ingest"}


def dispatch_workers(pid: int) -> set[int]:
    return {w for w, kind in _workers_by_kind(pid).items() if kind == "dispatch"}
