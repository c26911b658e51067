"""What ``/proc`` says about a process tree: CPU seconds and resident memory."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (e.g. ``ringfence up`` and its ingest worker)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def _ticks(stat: Path) -> int:
    """User + system CPU time in a process's or thread's ``stat`` file, in clock ticks."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far."""
    total = 0
    for pid in pids:
        try:
            total += _ticks(Path(f"/proc/{pid}/stat"))
        except FileNotFoundError:
            continue
    return total / CLOCK_TICKS


def rss_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total_kib / 1024


# HotSpot's own threads, by their names as /proc shows them (cut to 15 characters): the JIT
# compilers, the garbage collector's, and the VM thread that runs its pauses
_JVM_THREADS = ("C1 CompilerThre", "C2 CompilerThre", "GC Thread", "G1 ", "VM Thread")


def jvm_own_cpu_seconds(pid: int) -> float:
    """CPU time a JVM's compiler and garbage-collector threads have used so far: what a young
    JVM spends compiling is not what a long-running one spends per request."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return 0.0
    for task in tasks:
        try:
            if (task / "comm").read_text().startswith(_JVM_THREADS):
                total += _ticks(task / "stat")
        except FileNotFoundError:
            continue  # the thread ended
    return total / CLOCK_TICKS
