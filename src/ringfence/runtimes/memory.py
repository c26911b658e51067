"""The memory left to the process, and the guard that stops taking events before it runs out.

The engine's state grows with the keys events bring (about 1 KiB a customer, kept for its
longest window), so a producer sending ever new customers, devices or addresses grows it
until the kernel kills the process: it restarts, replays, and is killed again. Past the floor,
ingest answers 503 instead and readiness says why: what is in the journal is processed, and
nothing taken is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ringfence.runtimes.floor import Floor

MEMINFO = Path("/proc/meminfo")
CGROUPS = Path("/sys/fs/cgroup")
OWN_CGROUPS = Path("/proc/self/cgroup")


# (limit, usage, the usage's reclaimable file cache in memory.stat) of cgroup v2, then v1
_CGROUP_FILES = (
    ("", "memory.max", "memory.current", "inactive_file"),
    ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
)


def available_bytes(meminfo: Path = MEMINFO, cgroups: Path = CGROUPS, own: Path = OWN_CGROUPS) -> int | None:
    """What the process may still allocate: the machine's ``MemAvailable``, or less if its cgroup
    has a lower limit (less what the cgroup holds, its reclaimable file cache apart); None where
    none of it can be read."""
    found = [_machine_available(meminfo), *(_cgroup_available(cgroups, own, *files) for files in _CGROUP_FILES)]
    known = [n for n in found if n is not None]
    return min(known) if known else None


def _machine_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available(cgroups: Path, own: Path, hierarchy: str, limit: str, usage: str, cache: str) -> int | None:
    """What the process's cgroup may still take: its own directory, as /proc/self/cgroup names
    it, or the mount's root (a container sees its own group there)."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    controller = "memory" if hierarchy else ""
    paths = [line.split(":", 2)[2] for line in lines if line.count(":") >= 2 and line.split(":", 2)[1] == controller]
    for group in [cgroups / hierarchy / p.lstrip("/") for p in paths] + [cgroups / hierarchy]:
        try:
            most = (group / limit).read_text().strip()
            if most == "max":
                return None
            held = int((group / usage).read_text())
            stat = dict(line.split(maxsplit=1) for line in (group / "memory.stat").read_text().splitlines())
            return int(most) - held + int(stat.get(cache, 0))
        except (OSError, ValueError):
            continue
    return None


class MemoryGuard(Floor):
    """Says when the memory left is under ``floor_bytes``."""

    def __init__(self, floor_bytes: int, available: Callable[[], int | None] = available_bytes) -> None:
        super().__init__(floor_bytes)
        self._available = available

    def left(self) -> int | None:
        return self._available()

    def describe(self, left: int) -> str:
        return (
            f"the machine has {max(left, 0) // 2**20} MiB of memory left, under the {self.floor_bytes // 2**20} MiB "
            "kept free (min_free_memory_mib): events are refused until some is freed"
        )
