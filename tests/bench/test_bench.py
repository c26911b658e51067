"""The benchmark in its short mode: it completes and reports every figure (the figures
themselves are measured by full runs, documented in docs/performance.md, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ringfence.bench.compare import RUNTIMES, workload


def bench(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ringfence", "bench", *args], check=True, capture_output=True, timeout=300)


def test_the_quick_end_to_end_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    bench("--quick", "--out", str(out))
    result = json.loads((out / "e2e.json").read_text())
    summary = result["summary"]
    for figure in (
        "accepted_events_per_s",
        "processed_events_per_s",
        "p50_ingest_to_alert_s",
        "p99_ingest_to_alert_s",
        "cpu_us_per_event",
        "max_lag_events",
        "rss_max_mib",
    ):
        assert set(summary[figure]) == {"median", "min", "max"}, figure
    (run,) = result["runs"]
    assert run["events"] == 3_000
    assert run["processed_events_per_s"] > 0
    assert run["alerts"] > 0  # simulated fraud is detected, so latency is measured on real alerts
    assert run["ingest_to_alert_s"]["p99"] >= run["ingest_to_alert_s"]["p50"] > 0
    assert run["cpu_us_per_event"] > 0
    assert len(run["samples"]) >= 1
    assert result["engine_state"]["bytes_per_customer"] > 0
    assert result["machine"]["cpus"] >= 1
    assert (out / "e2e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_comparison_runs_every_runtime_on_the_same_events_and_they_agree(tmp_path: Path) -> None:
    out = tmp_path / "results"
    bench("--compare", "--quick", "--out", str(out))
    result = json.loads((out / "compare.json").read_text())
    assert set(result["events_per_s"]) == {"ringfence", "python", "bytewax"}
    assert result["ratio_to_ringfence"]["ringfence"] == 1.0
    assert result["alerts"] > 0


def test_every_runtime_counts_the_same_alerts_on_a_tricky_workload() -> None:
    events = workload(4_000, customers=50, seed=3)  # dense: windows fill, slide and empty
    counts = {name: run(events) for name, run in RUNTIMES.items()}
    assert len(set(counts.values())) == 1, counts
    assert next(iter(counts.values())) > 0
