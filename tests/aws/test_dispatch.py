"""The alert pipeline on SNS -> SQS -> the dispatcher, against the real local endpoint and a
real webhook receiver on 127.0.0.1: exactly one notification per alert and receiver, through
duplicates, receiver failures, a dispatcher that dies mid-way, silences and poison messages."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import ringfence
from ringfence.alerts.model import AlertQuery, alert_id
from ringfence.runtimes.aws.dispatch import notification_id
from ringfence.runtimes.aws.handlers import api_event
from ringfence.testing import event
from tests.helpers.aws import ANALYST, Deployment, DeploymentFactory, http_event
from tests.helpers.receivers import RecordingReceiver

SECRET = "webhook-secret-for-tests"


@pytest.fixture
def alerting(tmp_path: Path, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RINGFENCE_SECRET_AWS_HOOK", SECRET)
    path = tmp_path / "alerting.yaml"
    config = {
        "receivers": [
            {"name": "hook", "webhook": {"url": receiver.url + "/hook", "secret_env": "RINGFENCE_SECRET_AWS_HOOK"}}
        ],
        "route": {"receiver": "hook"},
        "retry": {"base_delay": "0s", "max_delay": "0s", "max_attempts": 3},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def failed_login_bursts(*customers: str) -> list[dict[str, Any]]:
    """Six failed logins per customer within a minute: one login_failed_burst alert each."""
    t0 = time.time() - 600
    return [
        event("login.failed", at=t0 + i, customer_id=c, ip=f"198.51.100.{n}")
        for n, c in enumerate(customers)
        for i in range(6)
    ]


def alerts_raised(deploy: DeploymentFactory, alerting: Path, *customers: str) -> Deployment:
    d = deploy(alerting=alerting)
    d.send(failed_login_bursts(*customers))
    d.stream.drain()
    assert len(d.alerts()) == len(customers)
    return d


def test_each_alert_is_notified_once_even_when_announced_twice(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d = alerts_raised(deploy, alerting, "cus_a", "cus_b")
    d.queue.drain()
    assert len(receiver.received) == 2
    # an outbox re-applied after a crash announces again: SNS delivers the same alert twice
    rt = d.runtime
    for announced in d.alerts():
        rt.clients.sns.publish(TopicArn=rt.names.alerts_topic_arn, Message=json.dumps({"alert_id": announced}))
    d.queue.drain()
    assert len(receiver.received) == 2
    payloads = [r.json() for r in receiver.received]
    assert {p["alerts"][0]["id"] for p in payloads} == set(d.alerts())
    assert all(r.headers.get("x-ringfence-signature") for r in receiver.received)
    for announced in d.alerts():
        sent = rt.alerts.notification(notification_id(announced, "hook"))
        assert sent is not None
        assert (sent["status"], sent["attempts"]) == ("sent", 1)
        history = rt.alerts.get_alert(announced).history
        assert [h.action for h in history] == ["created", "notify"]


def test_a_receiver_failing_twice_gets_the_notification_once(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d = alerts_raised(deploy, alerting, "cus_a")
    receiver.statuses = [503, 503]
    d.queue.drain()
    assert len(receiver.received) == 3  # two failures, then the delivery
    assert len({r.json()["notification_id"] for r in receiver.received}) == 1
    (only,) = d.alerts()
    sent = d.runtime.alerts.notification(notification_id(only, "hook"))
    assert sent is not None
    assert (sent["status"], sent["attempts"]) == ("sent", 3)


def test_a_receiver_that_keeps_failing_becomes_a_dead_letter(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d = alerts_raised(deploy, alerting, "cus_a")
    receiver.statuses = [500] * 10
    d.queue.drain()
    assert len(receiver.received) == 3  # max_attempts
    (only,) = d.alerts()
    dead = d.runtime.alerts.notification(notification_id(only, "hook"))
    assert dead is not None
    assert dead["status"] == "dead"
    assert "failed for good: HTTP 500" in d.runtime.alerts.get_alert(only).history[-1].reason


class Crash(Exception):
    pass


def test_a_dispatcher_killed_between_claiming_and_notifying_sends_once_after_restart(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d = alerts_raised(deploy, alerting, "cus_a")
    dispatcher = d.runtime.dispatcher
    notifier = dispatcher.notifiers["hook"]
    real_send = notifier.send

    def dies(*args: Any) -> Any:
        raise Crash("killed after the claim, before the request")

    notifier.send = dies  # type: ignore[method-assign]
    d.queue.poll()
    notifier.send = real_send  # type: ignore[method-assign]
    d.queue.poll()  # the message is back, but the dead invocation's lease still holds
    assert receiver.received == []
    later = time.time() + 61  # the lease ran out
    dispatcher.clock = lambda: later
    d.queue.drain()
    assert len(receiver.received) == 1
    d.queue.drain()
    assert len(receiver.received) == 1


def test_a_silenced_alert_is_suppressed_with_the_reason_and_not_notified(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d = deploy(alerting=alerting)
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    reply = api_event(
        d.runtime,
        http_event(
            "POST /v1/silences",
            ANALYST,
            {"matchers": ["customer_id=cus_a"], "ends_at": ends, "comment": "known test customer"},
        ),
    )
    assert reply["statusCode"] == 201, reply
    silence_id = json.loads(reply["body"])["id"]
    d.send(failed_login_bursts("cus_a", "cus_b"))
    d.stream.drain()
    d.queue.drain()
    assert [r.json()["alerts"][0]["customer_id"] for r in receiver.received] == ["cus_b"]
    alerts, _ = d.runtime.alerts.list_alerts(AlertQuery(customer_id="cus_a"))
    (muted,) = alerts
    assert muted.status == "suppressed"
    assert d.runtime.alerts.get_alert(muted.id).history[-1].reason == f"silenced by {silence_id}"


def test_a_message_the_dispatcher_cannot_handle_ends_in_the_dead_letter_queue(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d = alerts_raised(deploy, alerting, "cus_a")

    def broken(message: dict[str, Any]) -> str:
        raise Crash("a bug in the dispatcher")

    d.runtime.dispatcher.handle = broken  # type: ignore[method-assign]
    for _ in range(20):
        if not d.queue.poll():
            break
    assert receiver.received == []
    (parked,) = d.queue_messages(d.dead_letters_url)
    assert parked["alert_id"] in d.alerts()


def test_a_resolved_alert_is_announced_and_each_receiver_told_of_it_is_told_once(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d = alerts_raised(deploy, alerting, "cus_a", "cus_b")
    d.queue.drain()
    assert len(receiver.received) == 2
    target = alert_id("login_failed_burst", "cus_a", 1)
    assert target in d.alerts()
    for _ in range(2):  # resolving twice tells the receiver once
        reply = api_event(d.runtime, http_event("POST /v1/alerts/{id}/resolve", ANALYST, id=target))
        assert reply["statusCode"] == 200
        d.queue.drain()
    assert len(receiver.received) == 3
    told = receiver.received[-1].json()
    assert (told["status"], told["alerts"][0]["id"], told["alerts"][0]["status"]) == ("resolved", target, "resolved")
    assert told["notification_id"] == notification_id(target, "hook", "resolved")


def test_an_alert_nobody_was_told_of_is_resolved_silently(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d = deploy(alerting=alerting)
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    silence = {"matchers": ["customer_id=cus_a"], "ends_at": ends, "comment": "muted"}
    assert api_event(d.runtime, http_event("POST /v1/silences", ANALYST, silence))["statusCode"] == 201
    d.send(failed_login_bursts("cus_a"))
    d.stream.drain()
    d.queue.drain()
    (target,) = d.alerts()
    assert api_event(d.runtime, http_event("POST /v1/alerts/{id}/resolve", ANALYST, id=target))["statusCode"] == 200
    d.queue.drain()
    assert receiver.received == []


def test_the_tick_auto_resolves_quiet_alerts_of_detections_that_ask_for_it(
    deploy: DeploymentFactory, tmp_path: Path, alerting: Path, receiver: RecordingReceiver
) -> None:
    default = (Path(ringfence.__file__).parent / "rules" / "default.yaml").read_text()
    marker = 'title: "{failed_logins_10m} failed logins in 10 min"'
    assert marker in default
    pack = tmp_path / "pack.yaml"
    pack.write_text(default.replace(marker, marker + "\n    auto_resolve: 10m", 1))
    d = deploy(alerting=alerting, rule_pack=pack)
    d.send(failed_login_bursts("cus_a"))
    d.stream.drain()
    d.queue.drain()
    (target,) = d.alerts()
    processor = d.runtime.processor
    processor.tick()
    assert d.runtime.alerts.get_alert(target).status == "open"  # not quiet for 10 minutes yet
    later = time.time() + 601
    processor.clock = lambda: later
    processor.tick()
    alert = d.runtime.alerts.get_alert(target)
    assert alert.status == "resolved"
    assert (alert.history[-1].action, alert.history[-1].reason) == ("auto-resolve", "no new hit for 600 s")
    d.queue.drain()
    assert [r.json()["status"] for r in receiver.received] == ["firing", "resolved"]
    processor.tick()
    d.queue.drain()
    assert len(receiver.received) == 2
