"""Linearity on adversarial text, judged by a ratio of CPU times in one run: a host's speed (a
CI host may run twice as slow as a laptop) moves both times alike, where an absolute bound on
one would fail a linear scan on a slow day."""

from __future__ import annotations

import time
from collections.abc import Callable


def cpu_seconds(work: Callable[[], object], *, runs: int = 2, above_s: float = float("inf")) -> float:
    """The least CPU time of ``runs`` runs of ``work``; the first's alone once one takes more
    than ``above_s`` (a quadratic scan is not run twice)."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
        if best > above_s:
            break
    return best


def assert_linear(scan: Callable[[str], object], text: str, *, at_most_s: float) -> None:
    """``scan`` of ``text`` takes under ``at_most_s`` of CPU, and of four times ``text`` less than
    ten times as long (linear takes about 4, 3 to 6 measured; quadratic 16)."""
    scan(text[:1_000])  # the first sight of a character beyond ASCII may build a table
    once = cpu_seconds(lambda: scan(text), above_s=at_most_s)
    assert once < at_most_s, f"{once:.3f} s of CPU"
    # the slack is for the clock and the scheduler on the quick scans (10 ms or so)
    bound = 10 * once + 0.05
    four_times = cpu_seconds(lambda: scan(text * 4), above_s=2 * bound)  # a second try past the bound
    assert four_times < bound, f"{once:.3f} s of CPU, four times the text {four_times:.3f} s"
