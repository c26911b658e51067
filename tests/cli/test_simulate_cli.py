"""``ringfence simulate --report``: every injected scenario is either scored or named as not scored."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# short enough that the stream ends while some scenarios still unfold
SMALL_STREAM = ("--events", "3000", "--customers", "200", "--fraud-rate", "0.01")


def scored_and_unscored(out: str) -> tuple[int, int, int]:
    """The injected scenarios a report's output names, those its first table scores, and those
    it says were not scored."""
    injected = int(re.search(r"(\d+) injected scenarios", out).group(1))  # type: ignore[union-attr]
    scenarios = out[out.index("| scenario |") :].split("\n\n")[0]  # the first table; the next is by typology
    scored = sum(int(row.split("|")[2]) for row in scenarios.splitlines() if re.match(r"\| [a-z_]+ \| \d+ \|", row))
    unscored = re.search(r"(\d+) more injected scenarios were not scored: their events fell past the end", out)
    return injected, scored, int(unscored.group(1)) if unscored else 0


def test_report_accounts_for_every_injected_scenario(tmp_path: Path) -> None:
    """Events written out stop at --events, cutting the scenarios under way: the report names them."""
    report, events = tmp_path / "report.json", tmp_path / "events.ndjson"
    command = [sys.executable, "-m", "ringfence", "simulate", *SMALL_STREAM, "--out", str(events)]
    out = subprocess.run(
        [*command, "--report", "--report-out", str(report)], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    injected, scored, unscored = scored_and_unscored(out)
    assert unscored > 0, out
    assert scored + unscored == injected
    saved = json.loads(report.read_text())
    assert sum(saved["unscored"].values()) == unscored
    assert sum(s["injected"] for s in saved["scenarios"].values()) == scored
    assert len(events.read_text().splitlines()) == 3000


def test_a_report_alone_lets_every_scenario_finish() -> None:
    """With nowhere else to send them, the stream goes on past --events until every scenario
    under way has ended, so the long ones are scored as often as the short."""
    command = [sys.executable, "-m", "ringfence", "simulate", *SMALL_STREAM, "--report"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    injected, scored, unscored = scored_and_unscored(out)
    assert (scored, unscored) == (injected, 0), out
    finished = re.search(r"([\d,]+) events \(the last ([\d,]+) to finish the scenarios under way\)", out)
    assert finished is not None, out
    assert int(finished.group(1).replace(",", "")) - int(finished.group(2).replace(",", "")) == 3000


def test_the_same_seed_gives_the_same_traffic_as_before(tmp_path: Path) -> None:
    """Seeded traffic is where docs/detection-quality.* come from: a change to it (its events
    or labels) must come with a new report, and this digest."""
    events, labels = tmp_path / "events.ndjson", tmp_path / "labels.json"
    seeded = ("--events", "3000", "--customers", "200", "--fraud-rate", "0.05", "--seed", "7")
    out = ("--start", "2024-03-01T00:00:00+00:00", "--out", str(events), "--labels", str(labels))
    command = [sys.executable, "-m", "ringfence", "simulate", *seeded, *out]
    subprocess.run(command, capture_output=True, check=True, timeout=300)
    digest = hashlib.sha256(events.read_bytes() + labels.read_bytes()).hexdigest()
    assert digest == "6a69e058ac8b3d92b27293029c2ffbca2728e876243c1b2c5f85752fc66d1078"


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


def test_several_seeds_report_each_typologys_mean_and_worst_seed(tmp_path: Path) -> None:
    report = tmp_path / "seeds.json"
    small = ("--events", "4000", "--customers", "300", "--fraud-rate", "0.05", "--seed", "1000", "--seeds", "3")
    # scenarios of minutes, of four typologies: the stream finishes them soon after its 4,000 events
    short = (
        "card_testing",
        "login_failed_burst",
        "credential_stuffing_ip",
        "ato_reset_payee_transfer",
        "notify_low_balance",
    )
    small += tuple(option for name in short for option in ("--scenario", name))
    command = [sys.executable, "-m", "ringfence", "simulate", *small, "--report", "--report-out", str(report)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "Seeds 1000, 1001, 1002 (held-out; seeds from 1000 on are held out)." in out
    saved = json.loads(report.read_text())
    assert saved["seeds"] == [1000, 1001, 1002]
    assert saved["split"] == "held-out"
    runs = saved["runs"]
    assert (
        len({json.dumps(run["scenarios"], sort_keys=True) for run in runs.values()}) == 3
    )  # each seed its own traffic
    for typology, summary in saved["typologies"].items():
        recalls = {
            seed: run["typologies"][typology]["recall"] for seed, run in runs.items() if typology in run["typologies"]
        }
        assert summary["recall_worst"] == min(recalls.values())
        assert summary["recall_mean"] == pytest.approx(sum(recalls.values()) / len(recalls), abs=1e-4)
        assert recalls[str(summary["worst_seed"])] == summary["recall_worst"]
    false = [run["false_alerts_per_10k_normal"] for run in runs.values()]
    assert saved["false_alerts_per_10k_normal"]["worst"] == pytest.approx(max(false), abs=1e-3)


@pytest.mark.parametrize("where", [("--out", "events.ndjson"), ()])
def test_several_seeds_are_for_the_report_only(tmp_path: Path, where: tuple[str, ...]) -> None:
    command = [sys.executable, "-m", "ringfence", "simulate", "--seeds", "2", *where]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert "--seeds scores several seeds' traffic: use it with --report only" in done.stderr


@pytest.mark.parametrize("start", ["2026-11-20", "2026-11-20T00:00:00", "yesterday"])
def test_a_start_time_needs_its_offset(start: str) -> None:
    """Without one, the time would be the machine's local time: the same seed, other traffic."""
    command = [sys.executable, "-m", "ringfence", "simulate", "--report", "--events", "10", "--start", start]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"--start {start!r} is not an RFC 3339 time with its offset" in done.stderr


@pytest.mark.parametrize(
    ("arguments", "message", "code"),
    [
        (("--rate", "nan"), "--rate must be a number of events a second", 2),  # nan passes a range's bounds
        (("--start", "0001-01-01T00:00:00Z", "--out", "x.ndjson"), "must be in the years 2000 to 2100", 2),
        (("--customers", str(10**11)), "is not in the range 100<=x<=10000000", 2),
        (("--url", "http://127.0.0.1:1", "--key", "k"), "error: cannot send to the server: ", 1),  # nothing there
        (("--url", "ftp://127.0.0.1/", "--key", "k"), "error: cannot send to the server: ", 1),
        (("--out", "/dev/full"), "error: [Errno 28] No space left on device", 1),
    ],
)
def test_what_the_arguments_or_the_machine_refuse_is_one_line_not_a_traceback(
    tmp_path: Path, arguments: tuple[str, ...], message: str, code: int
) -> None:
    command = [sys.executable, "-m", "ringfence", "simulate", "--events", "200", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (done.returncode, "Traceback" in done.stderr) == (code, False), done.stderr
    assert message in done.stderr
