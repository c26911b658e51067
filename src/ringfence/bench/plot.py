"""A PNG of one run: throughput (accepted, processed) and lag over time, and ingest-to-alert
latency of each alert by when its event arrived (a sustained run's measured window shaded).
Needs matplotlib (the ``bench`` extra)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any


def plot_run(run: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    samples = run["samples"]
    times = [s["t"] for s in samples]
    fig, (rate_ax, latency_ax) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, color in (("accepted", "tab:blue"), ("processed", "tab:orange")):
        rates = [0.0] + [(b[name] - a[name]) / max(b["t"] - a["t"], 1e-9) for a, b in itertools.pairwise(samples)]
        rate_ax.plot(times, rates, label=f"{name} events/s", color=color)
    lag_ax = rate_ax.twinx()
    lag_ax.plot(times, [s["lag"] for s in samples], label="lag (events)", color="tab:gray", linestyle="--")
    lag_ax.set_ylabel("lag (events)")
    rate_ax.set_ylabel("events/s")
    rate_ax.legend(loc="upper left")
    lag_ax.legend(loc="upper right")
    rate_ax.grid(alpha=0.3)
    latencies = run["latencies"]
    latency_ax.scatter([t for t, _ in latencies], [latency * 1000 for _, latency in latencies], s=6, alpha=0.6)
    latency_ax.set_ylabel("ingest-to-alert (ms)")
    latency_ax.set_xlabel("seconds since the load started (latency: by its event's arrival)")
    latency_ax.set_yscale("log")
    latency_ax.grid(alpha=0.3)
    if "window_s" in run:  # a sustained run: what its figures were taken over
        for ax in (rate_ax, latency_ax):
            ax.axvspan(*run["window_s"], color="tab:green", alpha=0.08, label="measured window")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
