"""The benchmarks in their short modes: each completes and reports every figure, and what each
checks (the engines agree, nothing is lost across kill -9) holds. The figures themselves are
measured by full runs, documented in docs/performance.md, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from ringfence.bench.compare import RUNTIMES, workload
from ringfence.bench.e2e import (
    Options,
    queryable_buckets,
    queryable_within,
    traffic_file,
    trigger_ingested_at,
    uuid_of,
)
from ringfence.metrics import Metrics


def run_bench(out: Path, *args: str) -> None:
    """``ringfence bench ... --quick --out out``, which must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "ringfence", "bench", *args, "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def bench(out: Path, *args: str) -> dict[str, Any]:
    """``ringfence bench ... --quick --out out``; the JSON it wrote."""
    before = set(out.glob("*.json")) if out.exists() else set()
    run_bench(out, *args)
    (written,) = set(out.glob("*.json")) - before
    result: dict[str, Any] = json.loads(written.read_text())
    return result


E2E_FIGURES = (
    "accepted_events_per_s",
    "processed_events_per_s",
    "p50_ingest_to_alert_s",
    "p99_ingest_to_alert_s",
    "p99.9_ingest_to_alert_s",
    "queryable_within_50ms_share",
    "cpu_us_per_event",
    "max_lag_events",
    "rss_max_mib",
)


def test_the_quick_end_to_end_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = bench(out)
    for figure in E2E_FIGURES:
        assert set(result["summary"][figure]) == {"median", "min", "max"}, figure
    (run,) = result["runs"]
    assert run["events"] == 3_000
    assert run["processed_events_per_s"] > 0
    assert run["alerts_timed"] > 0  # simulated fraud is detected, so latency is measured on real alerts
    assert run["ingest_to_alert_s"]["p99"] >= run["ingest_to_alert_s"]["p50"] > 0
    queryable = run["queryable_within_s"]
    assert queryable["hits"] > 0
    assert queryable["0.01"] <= queryable["0.05"] <= queryable["0.25"] <= queryable["+Inf"] == 1.0
    assert run["cpu_us_per_event"] > 0
    assert len(run["samples"]) >= 2
    assert result["traffic"]["file"].startswith("traffic-seed")
    assert result["traffic"]["file"].endswith("-uuid.ndjson")  # by default, event ids as producers make them
    assert result["options"]["event_ids"] == "uuid"
    assert len(result["traffic"]["sha256"]) == 64
    assert result["engine_state"]["bytes_per_customer"] > 0
    assert result["machine"]["cpus"] >= 1
    assert (out / "e2e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_uuid_traffic_is_the_simulators_with_each_event_id_replaced_by_a_uuid_of_its_own(tmp_path: Path) -> None:
    def events(ids: str) -> list[dict[str, Any]]:
        path = traffic_file(Options(events=3_000, customers=200, event_ids=ids), tmp_path)
        return [json.loads(line) for line in path.read_text().splitlines()]

    sequential, uuids = events("sequential"), events("uuid")
    assert len(sequential) == len(uuids) == 3_000
    mapping: dict[str, str] = {}
    for plain, renamed in zip(sequential, uuids, strict=True):
        assert {**renamed, "event_id": plain["event_id"]} == plain  # nothing else differs
        assert uuid.UUID(renamed["event_id"]).version == 4
        assert mapping.setdefault(plain["event_id"], renamed["event_id"]) == renamed["event_id"]
    assert uuid_of("bench1-000000000001") == uuid_of("bench1-000000000001") != uuid_of("bench1-000000000002")
    assert len(set(mapping.values())) == len(mapping)  # distinct ids stay distinct
    assert sorted(mapping.values()) != [mapping[k] for k in sorted(mapping)]  # and lose their order
    with pytest.raises(ValueError, match="event ids 'ulid'"):
        traffic_file(Options(events=10, customers=20, event_ids="ulid"), tmp_path)


def test_event_ids_are_refused_outside_end_to_end_runs_and_when_unknown(tmp_path: Path) -> None:
    cases = (
        (["--engine-only", "--event-ids", "uuid"], "only for end-to-end runs"),
        (["--event-ids", "ulid"], "'ulid'"),
    )
    for args, problem in cases:
        done = subprocess.run(
            [sys.executable, "-m", "ringfence", "bench", *args, "--quick", "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert problem in done.stderr
    assert not list(tmp_path.glob("*.json"))


def test_a_sustained_run_measures_a_window_after_its_warm_up_and_stops_sending_there(tmp_path: Path) -> None:
    result = bench(tmp_path, "--sustained", "--setting", "journal_sync=full")
    assert result["options"]["server_settings"] == {"RINGFENCE_JOURNAL_SYNC": "full"}
    (run,) = result["runs"]
    steady = run["steady_state"]
    assert steady["complete"]
    assert result["summary"]["steady_state_complete"]
    assert steady["warmup_s"] >= 1.0
    assert steady["window_s"] >= 2.0
    assert steady["events_processed"] >= 2_000
    assert run["events"] < 40_000  # it stopped sending once the window was complete
    assert run["window_s"][0] == steady["warmup_s"]
    for figure in E2E_FIGURES:
        # none of a window's hits may be queryable within 50 ms: a sustained run's queue is long
        zero_allowed = figure in ("max_lag_events", "queryable_within_50ms_share")
        assert result["summary"][figure]["median"] > 0 or zero_allowed, figure
    latency = run["ingest_to_alert_s"]
    assert latency["p99.9"] >= latency["p99"] >= latency["p50"] > 0
    assert (tmp_path / "sustained-journal_sync-full.json").exists()


def test_the_engine_alone_runs_both_engines_in_every_mode_and_they_raise_the_same_signals(tmp_path: Path) -> None:
    result = bench(tmp_path, "--engine-only")
    assert set(result["figures"]) == {"native", "python"}
    for name, modes in result["figures"].items():
        assert {"process", "process+changes"} <= set(modes), name
        for mode, phases in modes.items():
            for phase in ("cold", "warm"):
                assert phases[phase]["events_per_s"] > 0, (name, mode, phase)
                assert phases[phase]["cpu_us_per_event"]["median"] > 0, (name, mode, phase)
    assert {"process_raw_many", "process_raw_many+packed"} <= set(result["figures"]["native"])
    assert result["signals"] > 0
    assert result["signals_identical"]  # the processor's batched calls raise the same signals too
    assert set(result["native_speedup"]) == set(result["figures"]["native"]) - {
        "process_raw_many",
        "process_raw_many+packed",
    }


def test_state_size_is_measured_for_both_engines_and_rss_agrees_with_the_python_heap(tmp_path: Path) -> None:
    result = bench(tmp_path, "--state-size")
    engines = result["engines"]
    assert set(engines) == {"native_rss", "python_rss", "python_tracemalloc"}
    assert 1_000 < result["customers_active"] <= 2_000
    assert len({e["feature_states"] for e in engines.values()}) == 1
    for name, measured in engines.items():
        assert measured["bytes_per_customer"] > 0, name
    ratio = engines["python_rss"]["state_bytes"] / engines["python_tracemalloc"]["state_bytes"]
    assert 0.5 < ratio < 2, ratio  # RSS growth sees the state, not noise


def test_recovery_after_kill_9_loses_nothing_and_doubles_no_alert(tmp_path: Path) -> None:
    result = bench(tmp_path, "--recovery")
    assert result["checks"] == {
        "acknowledged_events_kept": True,
        "log_holds_each_event_once": True,
        "alerts_equal_clean_run": True,
        "features_equal_clean_run": True,
    }
    assert result["ok"]
    assert result["alerts"] > 0
    assert len(result["restarts"]) == 2
    for restart in result["restarts"]:
        assert 0 < restart["serving_s"] <= restart["ready_s"] <= restart["processing_s"]
        assert restart["feature_states"] >= result["feature_states_loaded"] > 0


def test_the_differential_command_runs_both_engines_side_by_side(tmp_path: Path) -> None:
    run_bench(tmp_path, "--differential")
    report = (tmp_path / "differential.txt").read_text()
    assert "identical" in report
    assert "default seed 1" in report
    assert "coverage seed 1" in report


def test_the_comparison_runs_every_runtime_on_the_same_events_and_they_agree(tmp_path: Path) -> None:
    result = bench(tmp_path, "--compare")
    assert set(result["events_per_s"]) == {"ringfence_native", "ringfence_python", "python", "bytewax"}
    assert result["ratio_to_bytewax"]["bytewax"] == 1.0
    assert result["alerts"] > 0


def test_every_runtime_counts_the_same_alerts_on_a_tricky_workload() -> None:
    events = workload(4_000, customers=50, seed=3)  # dense: windows fill, slide and empty
    counts = {name: run(events) for name, run in RUNTIMES.items()}
    assert len(set(counts.values())) == 1, counts
    assert next(iter(counts.values())) > 0


def _event(at: str, ingested: str, *, own: bool) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": at, "occurred_at": at, "ingested_at": ingested}
    return event | ({"features": {}, "late": False} if own else {})


def test_ingest_to_alert_is_timed_from_the_event_whose_arrival_raised_the_alert() -> None:
    first, second = "2026-01-01T00:00:00+00:00", "2026-01-01T00:05:00+00:00"
    arrived = "2026-01-01T01:00:00+00:00"
    rule = {"count": 1, "first_seen": first, "evidence": {"events": [_event(first, arrived, own=True)]}}
    assert trigger_ingested_at(rule) == 1767229200.0
    # a sequence: its earlier step arrived long before; the alert is timed from the last step
    steps = [_event(first, "2026-01-01T00:00:01+00:00", own=False), _event(second, arrived, own=True)]
    sequence = {"count": 1, "first_seen": second, "evidence": {"events": steps}}
    assert trigger_ingested_at(sequence) == 1767229200.0
    # an absence fires at its deadline, after its anchor: no arrival raised it
    absence = {"count": 1, "first_seen": second, "evidence": {"events": [_event(first, arrived, own=True)]}}
    assert trigger_ingested_at(absence) is None
    # hits beyond the capped evidence: the first hit's event is gone
    capped = {"count": 60, "first_seen": first, "evidence": {"events": [_event(first, arrived, own=True)] * 50}}
    assert trigger_ingested_at(capped) is None


def test_the_share_of_hits_queryable_within_each_bound_is_read_from_the_servers_histogram() -> None:
    metrics = Metrics()
    before = queryable_buckets(metrics.render().decode())
    for seconds in (0.004, 0.03, 0.04, 0.2, 3.0):
        metrics.ingest_to_alert.observe(seconds)
    after = queryable_buckets(metrics.render().decode())
    bounds = ("0.01", "0.025", "0.05", "0.1", "0.25", "+Inf")
    assert before == {f"queryable_le_{bound}": 0.0 for bound in bounds}
    assert [after[f"queryable_le_{bound}"] for bound in bounds] == [1.0, 1.0, 3.0, 3.0, 4.0, 5.0]
    assert queryable_within(before, after) == {
        "0.01": 0.2,
        "0.025": 0.2,
        "0.05": 0.6,
        "0.1": 0.6,
        "0.25": 0.8,
        "+Inf": 1.0,
        "hits": 5.0,
    }
