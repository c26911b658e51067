"""The alert pipeline on SNS -> SQS -> the dispatcher, against the real local endpoint and a
real webhook receiver on 127.0.0.1: the embedded runtime's stages (mute, group, flush, deliver)
with their state in DynamoDB. Groups notified once through duplicates and racing messages,
retries with jitter and Retry-After, dead letters, a dispatcher that dies mid-way, silences,
inhibition, resolutions and messages that are no alert change. The dispatcher's clock is a
fixed one the tests move; the queue's own delays are real, so time-driven steps are taken by
hand, as the scheduled tick takes them."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import ringfence
from ringfence.alerts.config import RetryPolicy, load_alerting
from ringfence.alerts.delivery import retry_delay
from ringfence.alerts.model import AlertChange, AlertQuery, alert_id
from ringfence.runtimes.aws import handlers
from ringfence.runtimes.aws.announcements import OWED_GRACE_S
from ringfence.runtimes.aws.dispatch import AlertDispatcher
from ringfence.runtimes.aws.local import QueueSource
from ringfence.runtimes.aws.pipeline import DynamoBatch
from ringfence.testing import FixedClock, event
from tests.helpers.aws import ANALYST, Deployment, DeploymentFactory, http_event
from tests.helpers.receivers import RecordingReceiver

SECRET = "webhook-secret-for-tests"
BURST = "login_failed_burst"


def write_alerting(path: Path, url: str, *, retry: dict[str, Any] | None = None, **route: Any) -> Path:
    config = {
        "receivers": [{"name": "hook", "webhook": {"url": url + "/hook", "secret_env": "RINGFENCE_SECRET_AWS_HOOK"}}],
        "route": {"receiver": "hook", "group_by": ["customer_id"], "group_wait": "0s", **route},
        "retry": retry or {"base_delay": "0s", "max_delay": "0s", "max_attempts": 3},
        "inhibit_rules": [
            {"source_matchers": ["severity=critical"], "target_matchers": ["severity=medium"], "equal": ["customer_id"]}
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def alerting(tmp_path: Path, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RINGFENCE_SECRET_AWS_HOOK", SECRET)
    return write_alerting(tmp_path / "alerting.yaml", receiver.url)


def failed_logins(*customers: str, t0: float | None = None) -> list[dict[str, Any]]:
    """Six failed logins per customer within a minute: one login_failed_burst alert each."""
    t0 = time.time() - 600 if t0 is None else t0
    return [
        event("login.failed", at=t0 + i, customer_id=c, ip=f"198.51.100.{n}")
        for n, c in enumerate(customers)
        for i in range(6)
    ]


def deployed(deploy: DeploymentFactory, alerting: Path, *customers: str) -> tuple[Deployment, FixedClock]:
    """A deployment whose dispatcher runs on a fixed clock, with a burst alert per customer raised.
    The clock starts a minute ahead, so the dispatcher's history entries follow the processor's."""
    d = deploy(alerting=alerting)
    clock = FixedClock(time.time() + 60)
    d.runtime.dispatcher.close()
    d.runtime.dispatcher = AlertDispatcher(d.runtime.alerts, load_alerting(alerting), clock=clock)
    if customers:
        d.send(failed_logins(*customers))
        d.stream.drain()
    return d, clock


def burst(customer: str, occurrence: int = 1) -> str:
    return alert_id(BURST, customer, occurrence)


def payloads(receiver: RecordingReceiver) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.received]


def drain_until(d: Deployment, clock: FixedClock, done: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll the alerts queue until ``done()``, waiting out its delayed wake-ups (the
    dispatcher's clock moving on as long)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the queue did not get there"
        if not d.queue.poll():
            time.sleep(0.25)
            clock.advance(0.25)


class LambdaContext:
    """What the handlers read of Lambda's context object."""

    def __init__(self, remaining_s: float) -> None:
        self.ends = time.monotonic() + remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return int((self.ends - time.monotonic()) * 1000)


class RecordingSqs:
    """The SQS client, with the wake-up messages the dispatcher sends kept."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> Any:
        self.sent.append(kwargs)
        return self.sqs.send_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sqs, name)


def wake_record(d: Deployment) -> dict[str, Any]:
    """A wake-up message as the dispatch Lambda receives it."""
    sqs = d.runtime.clients.sqs
    arn = sqs.get_queue_attributes(QueueUrl=d.alerts_queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"messageId": "m-wake", "receiptHandle": "r", "body": '{"change": "wake"}', "eventSourceARN": arn}


def test_a_group_is_notified_once_after_its_wait_however_often_its_alerts_are_announced(
    deploy: DeploymentFactory, tmp_path: Path, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGFENCE_SECRET_AWS_HOOK", SECRET)
    config = write_alerting(tmp_path / "a.yaml", receiver.url, group_by=["rule_id"], group_wait="30s")
    d, clock = deployed(deploy, config, "cus_a", "cus_b")
    d.queue.drain()
    assert receiver.received == []  # the group waits to collect its alerts
    rt = d.runtime
    for customer in ("cus_a", "cus_b"):  # an outbox applied again announces again
        message = {"version": "1", "change": "firing", "alert_id": burst(customer)}
        rt.clients.sns.publish(TopicArn=rt.names.alerts_topic_arn, Message=json.dumps(message))
    d.queue.drain()
    clock.advance(30)
    rt.dispatcher.step()  # the tick (or the wake-up the dispatcher scheduled)
    rt.dispatcher.step()
    (sent,) = payloads(receiver)
    assert sent["group_labels"] == {"rule_id": BURST}
    assert {a["id"] for a in sent["alerts"]} == {burst("cus_a"), burst("cus_b")}
    assert receiver.received[0].headers.get("x-ringfence-signature")
    notification = rt.alerts.notification(sent["notification_id"])
    assert notification is not None
    assert (notification.status, notification.attempts) == ("sent", 1)
    history = rt.alerts.get_alert(burst("cus_a")).history
    assert [h.action for h in history] == ["created", "route", "notify"]
    # a new alert joins the group: told after group_interval (5 minutes), with the others
    d.send(failed_logins("cus_c"))
    d.stream.drain()
    d.queue.drain()
    clock.advance(299)
    rt.dispatcher.step()
    assert len(receiver.received) == 1
    clock.advance(1)
    rt.dispatcher.step()
    assert {a["id"] for a in payloads(receiver)[1]["alerts"]} == {burst(c) for c in ("cus_a", "cus_b", "cus_c")}


def test_the_scheduled_tick_flushes_a_group_whose_wake_up_was_lost(
    deploy: DeploymentFactory, tmp_path: Path, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGFENCE_SECRET_AWS_HOOK", SECRET)
    config = write_alerting(tmp_path / "a.yaml", receiver.url, group_by=["rule_id"], group_wait="30s")
    d, clock = deployed(deploy, config, "cus_a")
    d.queue.drain()
    d.runtime.clients.sqs.purge_queue(QueueUrl=d.queue.queue_url)  # its delayed wake-up is lost
    clock.advance(30)
    handlers.tick_event(d.runtime, {})
    (sent,) = payloads(receiver)
    assert [a["id"] for a in sent["alerts"]] == [burst("cus_a")]


def test_dispatchers_racing_into_one_group_both_join_it_and_it_is_told_once(
    deploy: DeploymentFactory,
    tmp_path: Path,
    receiver: RecordingReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("RINGFENCE_SECRET_AWS_HOOK", SECRET)
    caplog.set_level(logging.INFO, logger="ringfence.aws.dispatch")
    config = write_alerting(tmp_path / "a.yaml", receiver.url, group_by=["rule_id"], group_wait="30s")
    d, clock = deployed(deploy, config, "cus_a", "cus_b")
    racers = [AlertDispatcher(d.runtime.alerts, load_alerting(config), clock=clock) for _ in range(2)]
    for racer, customer in zip(racers, ("cus_a", "cus_b"), strict=True):
        racer.pipeline.receive(burst(customer), AlertChange.FIRING)
    together = threading.Barrier(2, timeout=30)
    first_commit = DynamoBatch.commit
    waited: set[int] = set()

    def commit_together(batch: DynamoBatch) -> None:  # both read the group before either writes it
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            together.wait()
        first_commit(batch)

    monkeypatch.setattr(DynamoBatch, "commit", commit_together)
    threads = [threading.Thread(target=racer.step) for racer in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    monkeypatch.setattr(DynamoBatch, "commit", first_commit)
    assert "lost a race" in caplog.text
    assert not any(racer.pipeline.pending() for racer in racers)  # the loser read again and joined
    clock.advance(30)
    racers[0].step()
    racers[1].step()
    (told,) = payloads(receiver)
    assert {a["id"] for a in told["alerts"]} == {burst("cus_a"), burst("cus_b")}
    for racer in racers:
        racer.close()


def test_a_receiver_failing_twice_gets_the_notification_once(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, clock = deployed(deploy, alerting, "cus_a")
    receiver.statuses = [503, 503]
    drain_until(d, clock, lambda: len(receiver.received) == 3)  # each failure schedules a wake-up, a second on
    d.queue.drain()
    assert len(receiver.received) == 3
    assert len({p["notification_id"] for p in payloads(receiver)}) == 1
    sent = d.runtime.alerts.notification(payloads(receiver)[0]["notification_id"])
    assert sent is not None
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 3, "")


def test_a_retry_waits_for_its_jittered_backoff_and_never_less_than_retry_after(
    deploy: DeploymentFactory, tmp_path: Path, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGFENCE_SECRET_AWS_HOOK", SECRET)
    retry = {"base_delay": "100s", "max_delay": "10m", "max_attempts": 5}
    config = write_alerting(tmp_path / "a.yaml", receiver.url, retry=retry)
    d, clock = deployed(deploy, config, "cus_a")
    deliver = d.runtime.dispatcher.stages.deliver
    deliver.rng = random.Random(7)
    receiver.statuses = [503, 503]
    d.queue.drain()
    (first,) = payloads(receiver)
    nid, start = first["notification_id"], clock.time()
    pending = d.runtime.alerts.notification(nid)
    assert pending is not None
    jittered = retry_delay(RetryPolicy(5, 100.0, 600.0), 1, None, random.Random(7))
    assert 50 <= jittered <= 100
    assert (pending.status, pending.attempts, pending.next_attempt_at) == ("pending", 1, start + jittered)
    wake = d.runtime.alerts.get("dispatch", "wake")
    assert wake is not None
    assert float(wake["at"]["N"]) == start + jittered  # the wake-up message's delay
    receiver.retry_after = "500"  # the second failure asks for more than the backoff's 100..200 s
    clock.advance(jittered)
    d.runtime.dispatcher.step()
    second = d.runtime.alerts.notification(nid)
    assert second is not None
    assert (second.attempts, second.next_attempt_at) == (2, clock.time() + 500)
    clock.advance(499)
    d.runtime.dispatcher.step()
    assert len(receiver.received) == 2
    clock.advance(1)
    d.runtime.dispatcher.step()
    assert len(receiver.received) == 3
    done = d.runtime.alerts.notification(nid)
    assert done is not None
    assert done.status == "sent"


def test_a_receiver_that_keeps_failing_leaves_a_dead_letter_until_it_is_redriven(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, clock = deployed(deploy, alerting, "cus_a")
    receiver.statuses = [500] * 3
    drain_until(d, clock, lambda: len(receiver.received) == 3)
    d.queue.drain()
    assert len(receiver.received) == 3  # max_attempts
    nid = payloads(receiver)[0]["notification_id"]
    dead = d.runtime.alerts.notification(nid)
    assert dead is not None
    assert (dead.status, dead.last_error) == ("dead", "HTTP 500")
    assert d.runtime.alerts.get_alert(burst("cus_a")).history[-1].reason.endswith("failed for good: HTTP 500")
    d.runtime.alerts.redrive(nid, "analyst-1", time.time())
    d.runtime.dispatcher.step()
    assert len(receiver.received) == 4
    sent = d.runtime.alerts.notification(nid)
    assert sent is not None
    assert (sent.status, sent.attempts) == ("sent", 1)


class Crash(Exception):
    pass


class Killed(BaseException):
    """The process ends: no handler of the code under test takes it (as none runs on a kill -9)."""


def test_a_dispatcher_killed_between_claiming_and_notifying_sends_once_after_the_lease(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, clock = deployed(deploy, alerting, "cus_a")
    notifier = d.runtime.dispatcher.notifiers["hook"]
    real_send = notifier.send

    def dies(*args: Any) -> Any:  # the process ends here (a failing send is an attempt, counted)
        raise Killed("killed after the claim, before the request")

    notifier.send = dies  # type: ignore[method-assign]
    with pytest.raises(Killed):
        d.queue.drain()
    notifier.send = real_send  # type: ignore[method-assign]
    d.runtime.dispatcher.step()  # the dead invocation's lease still holds
    assert receiver.received == []
    clock.advance(121)  # the lease ran out
    d.runtime.dispatcher.step()
    d.runtime.dispatcher.step()
    assert len(receiver.received) == 1


def test_a_silenced_alert_is_suppressed_with_the_reason_and_not_notified(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, _ = deployed(deploy, alerting)
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    body = {"matchers": ["customer_id=cus_a"], "ends_at": ends, "comment": "known test customer"}
    reply = d.call(http_event("POST /v1/silences", ANALYST, body))
    assert reply["statusCode"] == 201, reply
    silence_id = json.loads(reply["body"])["id"]
    d.send(failed_logins("cus_a", "cus_b"))
    d.stream.drain()
    d.queue.drain()
    assert [p["alerts"][0]["customer_id"] for p in payloads(receiver)] == ["cus_b"]
    muted = d.runtime.alerts.get_alert(burst("cus_a"))
    assert muted.status == "suppressed"
    assert (muted.history[-1].action, muted.history[-1].reason) == ("suppress", f"silenced by {silence_id}")


def test_an_alert_a_critical_one_of_its_customer_inhibits_is_suppressed(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, _ = deployed(deploy, alerting)
    t0 = time.time() - 600
    takeover = event("login.succeeded", at=t0 + 10, customer_id="cus_a", device_id="dev_new", ip="203.0.113.9")
    d.send([*failed_logins("cus_a", "cus_b", t0=t0), takeover])
    d.stream.drain()
    d.queue.drain()
    critical = alert_id("ato_burst_then_new_device", "cus_a", 1)
    told = {a["id"] for p in payloads(receiver) for a in p["alerts"]}
    assert told == {critical, burst("cus_b")}  # cus_b has no critical alert: not inhibited
    inhibited = d.runtime.alerts.get_alert(burst("cus_a"))
    assert (inhibited.status, inhibited.history[-1].reason) == ("suppressed", f"inhibited by {critical}")


def test_a_message_the_dispatcher_cannot_take_ends_in_the_dead_letter_queue(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, _ = deployed(deploy, alerting, "cus_a")
    rt = d.runtime
    rt.clients.sqs.send_message(QueueUrl=d.alerts_queue_url, MessageBody='{"no": "change"}')

    def unreadable(alert_ids: list[str]) -> Any:
        raise Crash("the table cannot be read")

    rt.alerts.views = unreadable  # type: ignore[method-assign]
    for _ in range(20):
        if not d.queue.poll():
            break
    assert receiver.received == []
    parked = d.queue_messages(d.dead_letters_url)
    assert sorted({m.get("alert_id", "") for m in parked}) == ["", burst("cus_a")]  # one per hit of it


def test_a_resolution_is_told_at_once_to_the_receiver_told_of_the_alert_and_only_once(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, _ = deployed(deploy, alerting, "cus_a", "cus_b")
    d.queue.drain()
    assert len(receiver.received) == 2
    for _ in range(2):  # resolving twice tells the receiver once
        reply = d.call(http_event("POST /v1/alerts/{id}/resolve", ANALYST, id=burst("cus_a")))
        assert reply["statusCode"] == 200, reply
        d.queue.drain()
    assert len(receiver.received) == 3
    told = payloads(receiver)[-1]
    assert (told["status"], [(a["id"], a["status"]) for a in told["alerts"]]) == (
        "resolved",
        [(burst("cus_a"), "resolved")],
    )


def test_a_firing_notification_awaiting_its_retry_is_superseded_by_the_resolution(
    deploy: DeploymentFactory, tmp_path: Path, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGFENCE_SECRET_AWS_HOOK", SECRET)
    retry = {"base_delay": "10m", "max_delay": "20m", "max_attempts": 5}  # a retry 5 to 10 min on
    config = write_alerting(tmp_path / "a.yaml", receiver.url, retry=retry)
    receiver.statuses = [503]
    d, clock = deployed(deploy, config, "cus_a")
    d.queue.drain()
    (firing,) = payloads(receiver)
    reply = d.call(http_event("POST /v1/alerts/{id}/resolve", ANALYST, id=burst("cus_a")))
    assert reply["statusCode"] == 200, reply
    d.queue.drain()
    clock.advance(1200)  # past the firing one's retry
    d.runtime.dispatcher.step()
    assert [(p["status"], [a["status"] for a in p["alerts"]]) for p in payloads(receiver)] == [
        ("firing", ["open"]),
        ("resolved", ["resolved"]),
    ]
    resolved = payloads(receiver)[1]["notification_id"]
    old = d.runtime.alerts.notification(firing["notification_id"])
    assert old is not None
    assert (old.status, old.attempts, old.last_error) == ("superseded", 1, f"superseded by {resolved}")
    assert d.runtime.alerts.count_by_status() == {"superseded": 1, "sent": 1}
    assert [n.id for n in d.runtime.alerts.notifications("superseded", 10, None)[0]] == [old.id]


def test_an_alert_nobody_was_told_of_is_resolved_silently(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, _ = deployed(deploy, alerting)
    d.runtime.alerts.create_silence(["customer_id=cus_a"], time.time(), time.time() + 3600, "a", "muted", time.time())
    d.send(failed_logins("cus_a"))
    d.stream.drain()
    d.queue.drain()
    reply = d.call(http_event("POST /v1/alerts/{id}/resolve", ANALYST, id=burst("cus_a")))
    assert reply["statusCode"] == 200
    d.queue.drain()
    assert receiver.received == []


def test_a_second_incident_after_the_first_was_resolved_is_notified(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, _ = deployed(deploy, alerting, "cus_a")
    d.queue.drain()
    d.call(http_event("POST /v1/alerts/{id}/resolve", ANALYST, id=burst("cus_a")))
    d.queue.drain()
    assert [p["status"] for p in payloads(receiver)] == ["firing", "resolved"]
    d.send(failed_logins("cus_a", t0=time.time() - 60))
    d.stream.drain()
    d.queue.drain()
    assert [a["id"] for a in payloads(receiver)[-1]["alerts"]] == [burst("cus_a", 2)]


def auto_resolving(deploy: DeploymentFactory, tmp_path: Path, alerting: Path) -> tuple[Deployment, FixedClock]:
    """A deployment whose burst detection resolves its alerts after 10 quiet minutes, with a
    burst alert raised and notified; the dispatcher runs on a fixed clock."""
    default = (Path(ringfence.__file__).parent / "rules" / "default.yaml").read_text()
    marker = 'title: "{failed_logins_10m} failed logins in 10 min"'
    assert marker in default
    pack = tmp_path / "pack.yaml"
    pack.write_text(default.replace(marker, marker + "\n    auto_resolve: 10m", 1))
    d = deploy(alerting=alerting, rule_pack=pack)
    rt = d.runtime
    clock = FixedClock(time.time() + 60)
    rt.dispatcher.close()
    rt.dispatcher = AlertDispatcher(
        rt.alerts, load_alerting(alerting), clock=clock, auto_resolve=lambda: rt.pack.auto_resolve
    )
    d.send(failed_logins("cus_a"))
    d.stream.drain()
    d.queue.drain()
    return d, clock


def test_the_tick_auto_resolves_quiet_alerts_of_detections_that_ask_for_it(
    deploy: DeploymentFactory, tmp_path: Path, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, clock = auto_resolving(deploy, tmp_path, alerting)
    target = burst("cus_a")
    handlers.tick_event(d.runtime, {})
    assert d.runtime.alerts.get_alert(target).status == "open"  # not quiet for 10 minutes yet
    clock.advance(601)
    handlers.tick_event(d.runtime, {})
    alert = d.runtime.alerts.get_alert(target)
    assert alert.status == "resolved"
    assert ("auto-resolve", "no new hit for 600 s") in [(h.action, h.reason) for h in alert.history]
    d.queue.drain()
    assert [p["status"] for p in payloads(receiver)] == ["firing", "resolved"]
    clock.advance(OWED_GRACE_S + 1)
    handlers.tick_event(d.runtime, {})  # the resolution was handed on: nothing is owed
    d.queue.drain()
    assert len(receiver.received) == 2
    (listed,), _ = d.runtime.alerts.list_alerts(AlertQuery(status=("resolved",)))
    assert listed.id == target


def test_an_auto_resolution_a_dispatcher_died_before_handing_on_is_announced_by_the_tick(
    deploy: DeploymentFactory, tmp_path: Path, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, clock = auto_resolving(deploy, tmp_path, alerting)
    rt = d.runtime
    clock.advance(601)
    assert rt.dispatcher.stages.auto_resolve(clock.time()) == 1
    rt.dispatcher.pipeline.release()  # the invocation dies with the resolution in its memory
    assert rt.alerts.get_alert(burst("cus_a")).status == "resolved"
    handlers.tick_event(rt, {})  # owed for less than the grace: its dispatcher may still be at it
    d.queue.drain()
    assert [p["status"] for p in payloads(receiver)] == ["firing"]
    clock.advance(OWED_GRACE_S)
    assert handlers.tick_event(rt, {})["announced"] == 1
    d.queue.drain()
    assert [p["status"] for p in payloads(receiver)] == ["firing", "resolved"]
    assert handlers.tick_event(rt, {})["announced"] == 0


def test_a_change_through_the_api_is_announced_once_and_a_failed_publish_is_owed_not_an_error(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, clock = deployed(deploy, alerting, "cus_a")
    d.queue.drain()
    rt = d.runtime
    real_publish = rt.clients.sns.publish
    published: list[str] = []

    def counted(**kwargs: Any) -> Any:
        published.append(json.loads(kwargs["Message"])["change"])
        return real_publish(**kwargs)

    def unavailable(**kwargs: Any) -> Any:
        raise Crash("SNS is unavailable")

    monkeypatch.setattr(rt.clients.sns, "publish", counted)
    for _ in range(2):
        reply = d.call(http_event("POST /v1/alerts/{id}/ack", ANALYST, id=burst("cus_a")))
        assert reply["statusCode"] == 200, reply
    assert published == ["acknowledged"]  # the second acknowledgement changed nothing
    monkeypatch.setattr(rt.clients.sns, "publish", unavailable)
    reply = d.call(http_event("POST /v1/alerts/{id}/resolve", ANALYST, id=burst("cus_a")))
    assert (reply["statusCode"], json.loads(reply["body"])["status"]) == (200, "resolved")  # it is committed
    monkeypatch.setattr(rt.clients.sns, "publish", counted)
    d.queue.drain()
    handlers.tick_event(rt, {})  # owed for less than the grace: the request may still publish it
    assert published == ["acknowledged"]
    clock.advance(OWED_GRACE_S)
    handlers.tick_event(rt, {})
    d.queue.drain()
    assert published == ["acknowledged", "resolved"]
    assert payloads(receiver)[-1]["status"] == "resolved"
    handlers.tick_event(rt, {})
    assert published == ["acknowledged", "resolved"]


def test_a_dispatch_with_too_little_time_left_claims_no_notification_and_leaves_it_due(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, clock = deployed(deploy, alerting, "cus_a")
    rt = d.runtime
    short = QueueSource(rt.clients.sqs, d.alerts_queue_url, lambda e: handlers.dispatch_event(rt, e, LambdaContext(3)))
    short.drain()
    assert receiver.received == []  # a send may take the webhook's 5 s timeout: more than is left
    (left,), _ = rt.alerts.notifications("pending", 10, None)
    assert (left.attempts, left.next_attempt_at <= clock.time()) == (0, True)  # not claimed: still due
    handlers.tick_event(rt, {}, LambdaContext(60))
    assert len(receiver.received) == 1


def test_a_handled_batch_whose_notification_was_sent_schedules_no_immediate_wake_up(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, _ = deployed(deploy, alerting, "cus_a")
    rt = d.runtime
    sqs = RecordingSqs(rt.clients.sqs)
    QueueSource(rt.clients.sqs, d.alerts_queue_url, lambda e: rt.dispatcher.handle_queue_event(e, sqs)).drain()
    assert len(receiver.received) == 1
    assert sqs.sent == []  # the group is due again after its repeat interval: the tick's to wake for


def test_what_a_step_leaves_due_is_woken_for_after_a_second_then_a_growing_backoff(
    deploy: DeploymentFactory, alerting: Path, receiver: RecordingReceiver
) -> None:
    d, clock = deployed(deploy, alerting, "cus_a")
    rt = d.runtime
    sqs = RecordingSqs(rt.clients.sqs)

    def short(event: dict[str, Any]) -> dict[str, Any]:
        return rt.dispatcher.handle_queue_event(event, sqs, time.monotonic() + 3)

    QueueSource(rt.clients.sqs, d.alerts_queue_url, short).drain()
    for _ in range(2):
        clock.advance(sqs.sent[-1]["DelaySeconds"])  # the wake-up arrives: still no time to send
        short({"Records": [wake_record(d)]})
    delays = [m["DelaySeconds"] for m in sqs.sent]
    assert delays[0] == 1
    assert delays[0] < delays[1] < delays[2]
    assert receiver.received == []
