"""``ringfence simulate --report``: every injected scenario is either scored or named as not scored."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# short enough that the stream ends while some scenarios still unfold
SMALL_STREAM = ("--events", "3000", "--customers", "200", "--fraud-rate", "0.01")


def test_report_accounts_for_every_injected_scenario(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "ringfence", "simulate", *SMALL_STREAM, "--report", "--report-out", str(report)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    injected = int(re.search(r"(\d+) injected scenarios", out).group(1))  # type: ignore[union-attr]
    scenarios = out[out.index("| scenario |") :].split("\n\n")[0]  # the first table; the second is by detection
    scored = sum(int(row.split("|")[2]) for row in scenarios.splitlines() if re.match(r"\| [a-z_]+ \| \d+ \|", row))
    unscored = re.search(r"(\d+) more injected scenarios were not scored: their events fell past the end", out)
    assert unscored is not None, out
    assert scored + int(unscored.group(1)) == injected
    saved = json.loads(report.read_text())
    assert sum(saved["unscored"].values()) == int(unscored.group(1))
    assert sum(s["injected"] for s in saved["scenarios"].values()) == scored


def test_the_same_seed_gives_the_same_traffic_as_before(tmp_path: Path) -> None:
    """Seeded traffic is where docs/detection-quality.* come from: a change to it (its events
    or labels) must come with a new report, and this digest."""
    events, labels = tmp_path / "events.ndjson", tmp_path / "labels.json"
    seeded = ("--events", "3000", "--customers", "200", "--fraud-rate", "0.05", "--seed", "7")
    out = ("--start", "2024-03-01T00:00:00+00:00", "--out", str(events), "--labels", str(labels))
    command = [sys.executable, "-m", "ringfence", "simulate", *seeded, *out]
    subprocess.run(command, capture_output=True, check=True, timeout=300)
    digest = hashlib.sha256(events.read_bytes() + labels.read_bytes()).hexdigest()
    assert digest == "484a216a4d39af3d3a0f6864515b7b0fa50eaa5a793b0fa861ded03169bc5f90"


def test_simulating_into_kafka_without_the_runtime_configured_is_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
    done = subprocess.run(
        [sys.executable, "-m", "ringfence", "simulate", "--kafka", "--events", "10"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "error: the kafka runtime needs postgres_dsn (RINGFENCE_POSTGRES_DSN=postgresql://user@host/db)"
    )
