"""Linearity on adversarial text, judged by a ratio of CPU times in one run: a host's speed (a
CI host may run twice as slow as a laptop) moves both times alike, where an absolute bound on
one would fail a linear scan on a slow day."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def cpu_seconds(work: Callable[[], object], runs: int = 2) -> float:
    """The least CPU time of ``runs`` runs of ``work``."""
    best = math.inf
    for _ in range(runs):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def assert_linear(scan: Callable[[str], object], text: str, *, at_most_s: float) -> None:
    """``scan`` of four times ``text`` takes less than ten times its CPU time on ``text`` (linear
    takes about 4, 3 to 6 measured; quadratic 16), and ``text`` takes under ``at_most_s``."""
    scan(text[:1_000])  # the first sight of a character beyond ASCII may build a table
    once = cpu_seconds(lambda: scan(text))
    four_times = cpu_seconds(lambda: scan(text * 4))
    # the slack is for the clock and the scheduler on the quick scans (10 ms or so)
    assert four_times < 10 * once + 0.05, f"{once:.3f} s of CPU, four times the text {four_times:.3f} s"
    assert once < at_most_s, f"{once:.3f} s of CPU"
