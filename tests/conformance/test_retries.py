"""Delivery on every runtime: a failed notification is tried again after an exponential,
jittered backoff and never sooner than the receiver's Retry-After; out of attempts (or refused)
it is a dead letter, until someone re-drives it."""

from __future__ import annotations

from typing import Any

import pytest

from ringfence.alerts.model import alert_id
from ringfence.errors import NotFound
from tests.helpers.conformance import Harness, webhook_alerting
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.store import signal

VELOCITY = alert_id("velocity", "tok_1", 1)


def retrying(url: str, base_delay: str, max_attempts: int) -> dict[str, Any]:
    config = webhook_alerting(url)
    config["retry"] = {"base_delay": base_delay, "max_delay": "10m", "max_attempts": max_attempts}
    return config


def test_a_retry_is_never_sooner_than_retry_after(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(retrying(receiver.url, "1s", 4))  # the backoff alone: 0.5..1 s
    receiver.statuses, receiver.retry_after = [503], "8"
    runtime.hit(signal(1))
    runtime.step()
    (pending,) = runtime.notifications()
    assert (pending.status, pending.attempts, pending.last_error) == ("pending", 1, "HTTP 503")
    assert pending.next_attempt_at == runtime.clock.time() + 8
    runtime.step(7.9)
    assert len(receiver.received) == 1
    runtime.step(0.1)
    assert len(receiver.received) == 2
    (sent,) = runtime.notifications()
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 2, "")
    assert len({r.json()["notification_id"] for r in receiver.received}) == 1


def test_retries_back_off_exponentially_with_jitter(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(retrying(receiver.url, "100s", 5))
    customers = [f"c{i}" for i in range(4)]
    receiver.statuses = [503] * (2 * len(customers))
    for i, customer in enumerate(customers):  # a group, and a notification, each
        runtime.hit(signal(i, key=f"tok_{i}", customer_id=customer))
    start = runtime.clock.time()
    runtime.step()
    first = [n.next_attempt_at - start for n in runtime.notifications()]
    assert len(first) == len(customers)
    assert all(50 <= delay <= 100 for delay in first), first  # 100 s x 2^0, scaled by 0.5..1
    assert len(set(first)) > 1  # jittered: retries of many notifications do not stampede
    runtime.step(100)  # each tried again, and failing again
    second = runtime.clock.time()
    assert len(receiver.received) == 2 * len(customers)
    delays = [n.next_attempt_at - second for n in runtime.notifications()]
    assert all(100 <= delay <= 200 for delay in delays), delays  # 100 s x 2^1, scaled by 0.5..1
    assert all(n.attempts == 2 for n in runtime.notifications())


def test_a_notification_out_of_attempts_is_a_dead_letter_until_redriven(
    runtime: Harness, receiver: RecordingReceiver
) -> None:
    runtime.configure(retrying(receiver.url, "0s", 3))
    receiver.statuses = [503] * 3
    runtime.hit(signal(1))
    for _ in range(5):
        runtime.step(1)
    assert len(receiver.received) == 3  # max_attempts
    (dead,) = runtime.notifications("dead")
    assert (dead.attempts, dead.last_error) == (3, "HTTP 503")
    failed = runtime.get(VELOCITY).history[-1]
    assert (failed.action, failed.reason) == ("notify", f"notification {dead.id} to hook failed for good: HTTP 503")
    runtime.step(3600)
    assert len(receiver.received) == 3  # a dead letter waits for someone
    again = runtime.redrive(dead.id)
    assert (again.status, again.attempts, again.last_error) == ("pending", 0, "")
    runtime.step()
    assert len(receiver.received) == 4
    assert receiver.received[-1].json()["notification_id"] == dead.id
    assert runtime.notifications("dead") == []
    (sent,) = runtime.notifications("sent")
    assert (sent.id, sent.attempts) == (dead.id, 1)
    assert runtime.get(VELOCITY).history[-1].reason == f"notified via hook ({dead.id})"
    assert [(e["action"], e["target"]) for e in runtime.audit_entries()] == [("notification.redrive", dead.id)]


def test_a_refusal_is_a_dead_letter_at_once(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(retrying(receiver.url, "0s", 3))
    receiver.statuses = [400]
    runtime.hit(signal(1))
    runtime.step()
    runtime.step(60)
    assert len(receiver.received) == 1  # not tried again: the receiver refused it
    (dead,) = runtime.notifications("dead")
    assert dead.attempts == 1
    assert dead.last_error.startswith("HTTP 400")


def test_only_a_dead_letter_can_be_redriven(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url))
    runtime.hit(signal(1))
    runtime.step()
    (sent,) = runtime.notifications("sent")
    with pytest.raises(NotFound):
        runtime.redrive(sent.id)
    with pytest.raises(NotFound):
        runtime.redrive("n_missing")
    assert runtime.audit_entries() == []
