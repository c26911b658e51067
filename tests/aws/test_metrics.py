"""The processor's and the tick's CloudWatch metrics (embedded metric format on stdout, on
Lambda only): the handlers as Lambda runs them, against the local endpoint, with a hot
address's alert that loses every race. The alarm on them is tested with the template's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringfence.alerts.model import AlertQuery
from ringfence.errors import StoreError
from ringfence.runtimes.aws import alerts as alerts_module
from ringfence.runtimes.aws import metrics
from ringfence.runtimes.aws.alerts import AlertContention
from ringfence.runtimes.aws.handlers import process_event, tick_event
from tests.helpers.aws import HOT_IP, DeploymentFactory, with_hot_address, workload

ADDRESS_RULE = "credential_stuffing_ip"


def metric_records(out: str) -> list[dict[str, Any]]:
    """The embedded-metric-format records among a function's output lines."""
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r for r in records if "_aws" in r]


def test_a_metric_line_declares_its_metrics_and_dimensions() -> None:
    line = json.loads(metrics.metric_line("events", "tick", {"AlertsWaiting": 2, "AlertsCreated": 0}, 1700000000.5))
    (declared,) = line["_aws"]["CloudWatchMetrics"]
    assert line["_aws"]["Timestamp"] == 1700000000500
    assert declared["Namespace"] == "Ringfence"
    assert declared["Dimensions"] == [["Stream", "Function"]]
    assert [m["Name"] for m in declared["Metrics"]] == ["AlertsWaiting", "AlertsCreated"]
    assert (line["Stream"], line["Function"], line["AlertsWaiting"], line["AlertsCreated"]) == ("events", "tick", 2, 0)


def test_nothing_is_written_off_lambda(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    metrics.emit("events", "tick", {"AlertsWaiting": 1}, 0.0)
    assert capsys.readouterr().out == ""


def test_the_processor_and_the_tick_count_the_alerts_left_waiting(
    deploy: DeploymentFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "ringfence-process")
    monkeypatch.setattr(alerts_module, "contention_pause_s", lambda retry, rng: 0.0)
    d = deploy(shards=1, batch_size=500)
    rt = d.runtime
    real_apply = rt.alerts.apply

    def the_address_loses(hits: Any, source: str, now: float) -> Any:  # a racer always wins its alert
        if hits[0][1].rule_id == ADDRESS_RULE:
            raise AlertContention("a racer won every attempt")
        return real_apply(hits, source, now)

    rt.alerts.apply = the_address_loses  # type: ignore[method-assign]
    hot = with_hot_address(workload(400), 0.2, seed=7)
    d.send(hot)
    (shard,) = d.stream.shard_ids()
    capsys.readouterr()
    assert process_event(rt, d.stream.event_for(shard, d.stream.read(shard))) == {"batchItemFailures": []}
    (processed,) = metric_records(capsys.readouterr().out)
    assert (processed["Stream"], processed["Function"]) == (rt.names.stream, "process")
    assert processed["EventsProcessed"] == len(hot)
    assert processed["AlertsWaiting"] == 1  # the address's alert, its hits in their outboxes
    assert processed["AlertsCreated"] > 0  # the others applied

    tick_event(rt, {})
    (ticked,) = metric_records(capsys.readouterr().out)
    assert (ticked["Function"], ticked["AlertsWaiting"]) == ("tick", 1)  # still losing: what the alarm watches

    def timers_fail(outcome: Any) -> Any:
        raise StoreError("the timers' commit failed")

    monkeypatch.setattr(rt.processor, "_fire_due_timers", timers_fail)
    with pytest.raises(StoreError):
        tick_event(rt, {})
    (ticked,) = metric_records(capsys.readouterr().out)
    assert ticked["AlertsWaiting"] == 1  # counted all the same
    monkeypatch.undo()
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "ringfence-tick")

    rt.alerts.apply = real_apply  # type: ignore[method-assign]
    tick_event(rt, {})
    (ticked,) = metric_records(capsys.readouterr().out)
    assert ticked["AlertsWaiting"] == 0
    assert ticked["AlertsCreated"] == 1
    assert (ADDRESS_RULE, HOT_IP) in {(a.rule_id, a.dedup_key) for a in rt.alerts.list_alerts(AlertQuery(limit=500))[0]}
