"""Back-test jobs over a real journal, and the child processes that run them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ringfence.engine import default_pack_text
from ringfence.events.decode import validate_event
from ringfence.runtimes.backtest import BacktestJob
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.testing import event

T = TypeVar("T")
# The candidate pack of :func:`job`: the default pack with a looser low-balance rule.
LOW_BALANCE_100 = default_pack_text().replace("when: data.balance_ref < 50", "when: data.balance_ref < 100")


def journal(tmp_path: Path, count: int) -> Path:
    """A journal of ``count`` balance updates the candidate pack alone alerts on."""
    path = tmp_path / "journal.db"
    log = SqliteLog(path, 4)
    now = time.time()
    events = [
        validate_event(msgspec.json.encode(event("balance.updated", customer_id=f"cus_{i}", balance="70.00")), now)
        for i in range(count)
    ]
    log.append(events, now)
    log.close()
    return path


def job(path: Path, **changes: Any) -> BacktestJob:
    """A back-test of ``path`` comparing the default pack with :data:`LOW_BALANCE_100`; ``changes`` override."""
    fields: dict[str, Any] = {
        "journal": str(path),
        "after": 0,
        "limit": 1_000,
        "live": default_pack_text(),
        "candidate": LOW_BALANCE_100,
        "lists": {},
        "budget_s": 60.0,
        **changes,
    }
    return BacktestJob(**fields)


def backtest_children(parent: int | None = None) -> list[int]:
    """Pids of the back-test children of ``parent`` (default: this process) still alive (Linux /proc)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        child = re.search(rb"ringfence\.runtimes\.(\w+\.)?backtest", cmdline)
        if int(fields[1]) == parent and fields[0] != "Z" and child:
            pids.append(int(stat.parent.name))
    return pids


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a thread of its own: works even if a fixture left a loop running here."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main).result(timeout=120)
