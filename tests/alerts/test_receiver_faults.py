"""Receivers that misbehave cannot stall delivery to the others: a send ends within its
receiver's ``timeout_s`` however slowly the receiver answers (HTTP and SMTP, real sockets on
127.0.0.1), an alert title quoting event data with line breaks still makes an email (one
Subject, nothing injected), and a notifier that raises is a failed attempt, counted, while the
pass goes on to the next notification."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from ringfence.alerts.config import EmailDoc, WebhookDoc
from ringfence.alerts.model import NotificationStatus
from ringfence.alerts.notify.base import Outcome
from ringfence.alerts.notify.deadline import receiver_client
from ringfence.alerts.notify.email import EmailNotifier
from ringfence.alerts.notify.webhook import WebhookNotifier
from ringfence.alerts.stages import CLAIM_LEASE_S, DUE_NOTIFICATIONS, PASS_WAIT_S, SENDS_PER_RECEIVER
from ringfence.bench.servers import free_port
from ringfence.errors import StoreError
from ringfence.store.notifications import SqlNotificationLog
from ringfence.store.sql import SqlStore
from ringfence.testing import FixedClock
from tests.helpers.dispatching import dispatcher, hit, run, webhook_config
from tests.helpers.receivers import RecordingReceiver


@pytest.fixture
def dripping() -> Iterator[int]:
    """A server on 127.0.0.1 that reads what comes, then answers one byte every 0.2 s for 20 s
    (an HTTP status line, or an SMTP greeting: it never completes either). Yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        conn.settimeout(0.05)
        with conn:
            for _ in range(100):
                if stop.is_set():
                    break
                try:
                    conn.recv(65536)
                except TimeoutError:
                    pass
                except OSError:
                    break
                try:
                    conn.sendall(b"2")
                except OSError:
                    break
                time.sleep(0.15)

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    accepting = threading.Thread(target=accept, daemon=True)
    accepting.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        accepting.join(5)
        listener.close()


def payload(title: str = "a title") -> dict[str, Any]:
    alert = {"id": "a1", "title": title, "summary": "s", "severity": "high", "status": "open", "rule_id": "r"}
    return {"status": "firing", "notification_id": "n1", "alerts": [alert]}


def test_a_webhook_answering_a_byte_at_a_time_is_cut_off_at_its_timeout(dripping: int) -> None:
    port = dripping
    options = WebhookDoc(url=f"http://127.0.0.1:{port}/hook", secret_env=None, timeout_s=1.0)
    notifier = WebhookNotifier("slow", options, receiver_client())
    began = time.monotonic()
    result = notifier.send(payload(), "n1", 1.8e9)
    took = time.monotonic() - began
    assert result.outcome is Outcome.RETRY
    assert took < 4, took  # each read got 0.2 s apart: per-read timeouts alone would take 20 s


def test_a_proxy_from_the_environment_is_used_and_cut_off_at_the_timeout_too(
    dripping: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a review: a client given its own transport ignores HTTP_PROXY; a bank's egress goes
    through one. Here the proxy is the dripping server: the send goes to it, and ends in time."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dripping}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    options = WebhookDoc(url="http://receiver.invalid/hook", secret_env=None, timeout_s=1.0)
    began = time.monotonic()
    result = WebhookNotifier("proxied", options, receiver_client()).send(payload(), "n1", 1.8e9)
    assert result.outcome is Outcome.RETRY
    assert "ReadTimeout" in result.detail  # the proxy answered slowly: not a name that did not resolve
    assert time.monotonic() - began < 4


def test_an_smtp_server_answering_a_byte_at_a_time_is_cut_off_at_its_timeout(
    dripping: int,
) -> None:
    port = dripping
    options = EmailDoc(host="127.0.0.1", port=port, sender="rf@bank.test", to=["team@bank.test"], timeout_s=1.0)
    began = time.monotonic()
    result = EmailNotifier("slow-mail", options).send(payload(), "n1", 1.8e9)
    took = time.monotonic() - began
    assert result.outcome is Outcome.RETRY
    assert took < 4, took


class _Sink:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def test_a_title_with_line_breaks_makes_one_subject_and_injects_no_header() -> None:
    sink = _Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        options = EmailDoc(host="127.0.0.1", port=port, sender="rf@bank.test", to=["team@bank.test"], timeout_s=5.0)
        title = "API errors on /v1/pay\r\nBcc: someone@evil.example\n\tX-Injected: 1"
        result = EmailNotifier("mail", options).send(payload(title), "n1", 1.8e9)
    finally:
        controller.stop()
    assert result.outcome is Outcome.SENT, result.detail
    (envelope,) = sink.messages
    assert envelope.rcpt_tos == ["team@bank.test"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)  # long headers unfolded
    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    subject = message["Subject"]
    assert "\r" not in subject
    assert "\n" not in subject
    assert "Bcc: someone@evil.example" in subject  # shown, as text


def test_a_notifier_that_raises_is_a_failed_attempt_and_the_pass_goes_on(
    any_store: SqlStore, receiver: RecordingReceiver
) -> None:
    clock = FixedClock(1_800_000_000.0)
    d = dispatcher(any_store, clock, webhook_config(receiver.url, group_wait="0s"))
    sent = d.notifiers["hook"].send
    calls = 0

    def first_raises(payload: dict[str, Any], notification_id: str, now: float) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a receiver's bug")
        return sent(payload, notification_id, now)

    d.notifiers["hook"].send = first_raises  # type: ignore[method-assign]
    hit(any_store, clock, 1, key="tok_1", labels={"card": "tok_1"}, customer_id="c1")
    hit(any_store, clock, 2, key="tok_2", labels={"card": "tok_2"}, customer_id="c2")
    d.step()  # one pass: the first send raises, the second goes out
    assert calls == 2
    assert len(receiver.received) == 1
    notifications, _ = SqlNotificationLog(any_store).notifications(None, 10, None)
    failed = [n for n in notifications if n.status is NotificationStatus.PENDING]
    assert len(failed) == 1
    assert failed[0].attempts == 1  # counted: retried, then dead after max_attempts
    assert "ValueError" in failed[0].last_error
    run(d, clock, 5)
    assert len(receiver.received) == 2  # the retry of the one that raised


@pytest.mark.parametrize("kind", ["slack", "webhook"])
def test_a_receiver_url_can_come_from_the_environment_and_is_checked_at_load(
    any_store: SqlStore, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A receiver's URL may be its credential (a Slack incoming webhook's is; a webhook's may hold
    a token): ``url_env`` keeps it out of the config file."""
    from ringfence.alerts.config import build_config
    from ringfence.errors import ConfigError

    monkeypatch.setenv("RINGFENCE_SECRET_TEST_URL", receiver.url + "/services/T0/B0/secret")
    config = {
        "receivers": [{"name": "sre", kind: {"url_env": "RINGFENCE_SECRET_TEST_URL"}}],
        "route": {"receiver": "sre", "group_wait": "0s"},
    }
    clock = FixedClock(1_800_000_000.0)
    d = dispatcher(any_store, clock, config)
    hit(any_store, clock, 1)
    run(d, clock, 2)
    assert [r.path for r in receiver.received] == ["/services/T0/B0/secret"]
    for bad in ({"url_env": "RINGFENCE_SECRET_UNSET_URL"}, {}, {"url": "http://x", "url_env": "X"}):
        with pytest.raises(ConfigError, match="sre"):
            build_config({"receivers": [{"name": "sre", kind: bad}], "route": {"receiver": "sre"}})


def two_receivers(fast_url: str, slow_port: int) -> dict[str, Any]:
    """``hook`` for everything but the customers ``flood_*``, whose alerts go to ``slow``."""
    config = webhook_config(fast_url, group_wait="0s")
    config["receivers"].append(
        {"name": "slow", "webhook": {"url": f"http://127.0.0.1:{slow_port}/hook", "secret_env": None, "timeout_s": 2}}
    )
    config["route"]["routes"] = [{"matchers": ["customer_id=~flood_.*"], "receiver": "slow", "group_wait": "0s"}]
    return config


@pytest.mark.serial  # 1 s slack
def test_a_receiver_that_hangs_holds_up_no_other_receivers_notification(
    any_store: SqlStore, receiver: RecordingReceiver, dripping: int
) -> None:
    """20 older notifications to a receiver that answers a byte at a time, then one to a
    healthy one: sent one at a time, oldest first, it waited 20 timeouts (5 minutes in a
    hostile test of 5 s timeouts), and routing with it."""
    clock = FixedClock(1_800_000_000.0)
    d = dispatcher(any_store, clock, two_receivers(receiver.url, dripping))
    for i in range(20):
        hit(any_store, clock, i + 1, key=f"k{i}", customer_id=f"flood_{i}")
    hit(any_store, clock, 100, key="aml", customer_id="c_aml")
    try:
        began = time.monotonic()
        d.step(wait=PASS_WAIT_S)
        assert time.monotonic() - began < 2.0  # the slow receiver's sends go on on their threads
        assert len(receiver.received) == 1
        hit(any_store, clock, 101, key="aml2", customer_id="c_aml2")
        d.step(wait=PASS_WAIT_S)  # routing and the next send do not wait for the slow one either
        assert len(receiver.received) == 2
        assert time.monotonic() - began < 4.0
    finally:
        d.close()  # the slow sends under way end within their timeout
    notifications, _ = SqlNotificationLog(any_store).notifications(None, 100, None)
    slow = [n for n in notifications if n.receiver == "slow"]
    assert sum(n.attempts for n in slow) == SENDS_PER_RECEIVER  # two at once, and no more while they were
    assert all(n.status is NotificationStatus.PENDING for n in slow)  # retried later


def test_a_flood_to_one_receiver_hides_no_other_receivers_due_notification(
    any_store: SqlStore, receiver: RecordingReceiver
) -> None:
    clock = FixedClock(1_800_000_000.0)
    d = dispatcher(any_store, clock, two_receivers(receiver.url, free_port()))
    d.deliver.notifiers = {}  # nothing is sent: only what a pass would take is looked at
    for i in range(300):
        hit(any_store, clock, i + 1, key=f"k{i}", customer_id=f"flood_{i}")
    hit(any_store, clock, 1000, key="aml", customer_id="c_aml")
    d.intake(clock.time())
    while d.flush(clock.time()):
        pass
    oldest = any_store.due_notifications(clock.time(), DUE_NOTIFICATIONS)
    assert {n.receiver for n in oldest} == {"slow"}  # the flood's, oldest first
    due = any_store.due_notifications(
        clock.time(), DUE_NOTIFICATIONS, receivers=["hook", "slow"], each=SENDS_PER_RECEIVER
    )
    assert [n.receiver for n in due].count("hook") == 1  # found on its receiver's index
    assert [n.next_attempt_at for n in due] == sorted(n.next_attempt_at for n in due)
    d.close()


def one_due(store: SqlStore, receiver: RecordingReceiver) -> tuple[FixedClock, Any]:
    """A dispatcher to ``receiver`` and one alert whose notification is due at once."""
    clock = FixedClock(1_800_000_000.0)
    d = dispatcher(store, clock, webhook_config(receiver.url, group_wait="0s"))
    hit(store, clock, 1)
    return clock, d


def test_a_result_the_store_could_not_record_is_sent_again_once_its_claims_lease_runs_out(
    any_store: SqlStore, receiver: RecordingReceiver
) -> None:
    clock, d = one_due(any_store, receiver)
    real = d.deliver.store.pipeline
    calls = [0]

    @contextlib.contextmanager
    def second_fails() -> Iterator[Any]:
        calls[0] += 1
        if calls[0] == 2:  # the pass's claim went in; recording what the send got does not
            raise StoreError("the database went away")
        with real() as batch:
            yield batch

    d.deliver.store = SimpleNamespace(pipeline=second_fails, due_notifications=any_store.due_notifications)  # type: ignore[assignment]
    with pytest.raises(StoreError):
        d.step()
    assert len(receiver.received) == 1
    d.deliver.store = any_store
    d.step()  # claimed until its lease runs out: not sent again meanwhile
    assert len(receiver.received) == 1
    clock.advance(CLAIM_LEASE_S + 1)
    d.step()
    assert len(receiver.received) == 2  # the same notification, its id in the header, once more
    assert len({r.headers["x-ringfence-notification-id"] for r in receiver.received}) == 1
    d.close()


def test_a_send_that_outlasts_its_claims_lease_is_not_sent_again_meanwhile(
    any_store: SqlStore, receiver: RecordingReceiver
) -> None:
    clock, d = one_due(any_store, receiver)
    started, release = threading.Event(), threading.Event()
    real = d.notifiers["hook"].send
    calls = []

    def slow(payload: dict[str, Any], notification_id: str, now: float) -> Any:
        calls.append(notification_id)
        started.set()
        release.wait(10)
        return real(payload, notification_id, now)

    d.notifiers["hook"].send = slow  # type: ignore[method-assign]
    d.step(wait=0.1)
    assert started.wait(5)
    clock.advance(CLAIM_LEASE_S + 1)  # the lease ran out while it is still being sent
    d.step(wait=0.1)
    assert len(calls) == 1
    release.set()
    d.close()
    assert len(receiver.received) == 1


def test_a_result_the_store_refuses_holds_back_no_other_sends_result(
    any_store: SqlStore, receiver: RecordingReceiver
) -> None:
    """A pass records what its sends got in one transaction: one the store refused (a NUL in
    a receiver's answer, on PostgreSQL) rolled back the record of every other."""
    clock = FixedClock(1_800_000_000.0)
    d = dispatcher(any_store, clock, webhook_config(receiver.url, group_wait="0s"))
    hit(any_store, clock, 1, key="k1", customer_id="c1")
    hit(any_store, clock, 2, key="k2", customer_id="c2")
    real = any_store.pipeline
    refused: list[str] = []

    @contextlib.contextmanager
    def refusing() -> Iterator[Any]:
        with real() as batch:
            record = batch.record_attempt

            def record_attempt(notification_id: str, step: Any, now: float) -> bool:
                if not refused or refused[0] == notification_id:
                    refused[:1] = [notification_id]
                    raise StoreError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
                return record(notification_id, step, now)

            batch.record_attempt = record_attempt
            yield batch

    d.deliver.store = SimpleNamespace(pipeline=refusing, due_notifications=any_store.due_notifications)  # type: ignore[assignment]
    d.step()
    assert len(receiver.received) == 2
    notifications, _ = SqlNotificationLog(any_store).notifications(None, 10, None)
    assert sorted(n.status for n in notifications) == [NotificationStatus.PENDING, NotificationStatus.SENT]
    assert [n.id for n in notifications if n.status is NotificationStatus.PENDING] == refused  # its lease, then again
    d.close()
