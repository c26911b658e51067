"""``ringfence rules check|test`` and ``ringfence simulate``, run as a user would."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from ringfence.engine import default_pack_text
from ringfence.testing import event


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringfence", *args], capture_output=True, text=True, check=check, timeout=300
    )


def test_rules_check_accepts_the_default_pack(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(default_pack_text())
    out = cli("rules", "check", str(pack)).stdout
    assert out.startswith("OK: pack ")
    assert "28 rules, 6 patterns" in out


def test_rules_check_names_the_rule_and_column_of_an_error(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        default_pack_text().replace("when: failed_logins_10m >= 5\n", "when: failed_logins_10m >= 'five'\n", 1)
    )
    result = cli("rules", "check", str(pack), check=False)
    assert result.returncode == 1
    assert "rules[9] (login_failed_burst): cannot order number and string at column 22" in result.stderr


def test_rules_test_shows_which_detection_fired_on_which_event_and_why(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(default_pack_text())
    events = [event("login.failed", customer_id="cus_9", at=1_795_000_000 + i) for i in range(5)]
    events.append({"event_id": "bad", "type": "login.failed"})
    file = tmp_path / "events.ndjson"
    file.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    result = cli("rules", "test", str(pack), "--events", str(file), "--json")
    (hit,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert hit["rule_id"] == "login_failed_burst"
    assert hit["event_id"] == events[4]["event_id"]
    assert hit["features"] == {"failed_logins_10m": 5}
    assert hit["line"] == 5
    assert "line 6: invalid event" in result.stderr


def test_rules_test_converts_amounts_at_the_rates_given(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(default_pack_text())
    forints = [
        event("transfer.initiated", amount=a, currency="HUF", at=1_795_000_000) for a in ("2000.00", "1000000.00")
    ]
    file = tmp_path / "events.ndjson"
    file.write_text("\n".join(json.dumps(e) for e in forints) + "\n")
    rates = tmp_path / "rates.csv"
    rates.write_text("currency,rate,as_of\nHUF,0.0025,2026-11-30\n")
    args = ("rules", "test", str(pack), "--events", str(file), "--json")
    converted = [json.loads(line) for line in cli(*args, "--fx-rates", str(rates)).stdout.splitlines()]
    assert [(h["line"], h["rule_id"]) for h in converted] == [(2, "notify_large_transaction")]
    unrated = [json.loads(line)["rule_id"] for line in cli(*args).stdout.splitlines()]
    assert unrated == ["ops_fx_rate_missing", "ops_fx_rate_missing"]  # no rate: no amount compared raw
    rates.write_text("currency,rate,as_of\nHUF,-1,2026-11-30\n")
    refused = cli(*args, "--fx-rates", str(rates), check=False)
    assert refused.returncode == 2
    assert "rates[0].rate" in refused.stderr


def test_simulate_writes_events_and_separate_labels_and_reports_recall(tmp_path: Path) -> None:
    out, labels, report = tmp_path / "events.ndjson", tmp_path / "labels.json", tmp_path / "report.json"
    cli(
        "simulate",
        "--events",
        "4000",
        "--customers",
        "20000",
        "--rate",
        "5",
        "--fraud-rate",
        "0.01",
        "--seed",
        "3",
        "--scenario",
        "card_testing",
        "--scenario",
        "transfer_high_risk_country",
        "--out",
        str(out),
        "--labels",
        str(labels),
        "--report",
        "--report-out",
        str(report),
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 4000
    assert all("scenario" not in line for line in lines)  # labels never enter the events
    written = json.loads(labels.read_text())
    assert {label["scenario"] for label in written} == {"card_testing", "transfer_high_risk_country"}
    ids = {json.loads(line)["event_id"] for line in lines}
    last = max(dt.datetime.fromisoformat(json.loads(line)["occurred_at"]) for line in lines)
    cut = [label for label in written if not set(label["event_ids"]) <= ids]
    # only the stream's end cuts a scenario short (card testing takes up to about 10 minutes)
    assert all(dt.datetime.fromisoformat(label["started_at"]) > last - dt.timedelta(minutes=15) for label in cut)
    result = json.loads(report.read_text())
    for name in ("card_testing", "transfer_high_risk_country"):
        assert result["scenarios"][name]["injected"] > 0
        assert result["scenarios"][name]["recall"] == 1.0
    assert result["false_alerts_per_10k_normal"] <= 5


def test_simulate_refuses_unknown_scenarios_and_missing_targets() -> None:
    assert "unknown scenario" in cli("simulate", "--scenario", "nope", "--report", check=False).stderr
    assert "say where the traffic goes" in cli("simulate", check=False).stderr
