"""The alert pipeline end to end on real SQLite and real receivers on 127.0.0.1, with an
injected clock: the dispatcher is stepped by hand, time only moves when the test says so."""

from __future__ import annotations

import email
import threading
import time
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from ringfence.alerts import Action
from ringfence.alerts.dispatcher import Dispatcher
from ringfence.alerts.model import AlertQuery
from ringfence.alerts.notify.webhook import verify
from ringfence.bench.servers import free_port
from ringfence.store.notifications import SqlNotificationLog
from ringfence.store.silences import SqlSilenceStore
from ringfence.store.sql import SqlStore
from ringfence.testing import FixedClock
from tests.helpers.dispatching import SECRET, dispatcher, hit, run, webhook_config
from tests.helpers.receivers import RecordingReceiver


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_800_000_000.0)


@pytest.fixture
def store(any_store: SqlStore) -> SqlStore:
    return any_store


def test_one_signed_webhook_per_group_despite_repeated_hits(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    d = dispatcher(store, clock, webhook_config(receiver.url))
    for i in range(5):
        hit(store, clock, i)  # one alert, deduplicated: count 5
    hit(store, clock, 9, rule="other", key="k2")  # another alert of the same customer: same group
    run(d, clock, 29)
    assert receiver.received == []  # group_wait
    run(d, clock, 2)
    (request,) = receiver.received
    body = request.json()
    assert body["status"] == "firing"
    assert sorted(a["rule_id"] for a in body["alerts"]) == ["other", "velocity"]
    assert request.headers["x-ringfence-notification-id"] == body["notification_id"]
    ts, sig = request.headers["x-ringfence-timestamp"], request.headers["x-ringfence-signature"]
    assert verify(SECRET.encode(), request.body, ts, sig, clock.now)
    assert not verify(SECRET.encode(), request.body.replace(b"firing", b"resolvd"), ts, sig, clock.now)
    assert not verify(SECRET.encode(), request.body, ts, sig, clock.now + 3600)  # a replay, too late
    for i in range(10, 20):
        hit(store, clock, i)
    run(d, clock, 3600)
    assert len(receiver.received) == 1  # repeated hits change nothing until repeat_interval


def test_resolving_sends_a_resolve_notification_at_once(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    d = dispatcher(store, clock, webhook_config(receiver.url))
    hit(store, clock, 1)
    run(d, clock, 31)
    (alert_id,) = [a["id"] for a in receiver.received[0].json()["alerts"]]
    store.transition(alert_id, Action.RESOLVE, "key:ana", "fixed", clock.now)
    run(d, clock, 1)
    assert [r.json()["status"] for r in receiver.received] == ["firing", "resolved"]
    assert receiver.received[1].json()["alerts"][0]["status"] == "resolved"


def test_a_second_incident_after_the_first_was_resolved_is_notified(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    d = dispatcher(store, clock, webhook_config(receiver.url))
    hit(store, clock, 1)
    run(d, clock, 31)
    (first,) = [a["id"] for a in receiver.received[0].json()["alerts"]]
    store.transition(first, Action.RESOLVE, "key:ana", "fixed", clock.now)
    run(d, clock, 1)  # the resolution is sent, and the group, with nothing firing, is gone
    hit(store, clock, 2)  # the same customer's group forms again, for a new alert
    run(d, clock, 31)
    assert [r.json()["status"] for r in receiver.received] == ["firing", "resolved", "firing"]
    (second,) = [a["id"] for a in receiver.received[2].json()["alerts"]]
    assert second != first
    assert len({r.json()["notification_id"] for r in receiver.received}) == 3


def test_a_receiver_failing_twice_with_503_gets_the_notification_once(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    receiver.statuses = [503, 503]
    d = dispatcher(store, clock, webhook_config(receiver.url))
    hit(store, clock, 1)
    run(d, clock, 60)
    assert len(receiver.received) == 3
    assert len({r.json()["notification_id"] for r in receiver.received}) == 1
    (sent,), _ = SqlNotificationLog(store).notifications("sent", 10, None)
    assert sent.attempts == 3
    history = store.get_alert(sent.payload["alerts"][0]["id"]).history
    assert any(h.action == "notify" and "notified via hook" in h.reason for h in history)


def test_retry_after_is_honoured(store: SqlStore, clock: FixedClock, receiver: RecordingReceiver) -> None:
    receiver.statuses, receiver.retry_after = [429], "8"
    d = dispatcher(store, clock, webhook_config(receiver.url))
    hit(store, clock, 1)
    run(d, clock, 31)  # the first attempt, at +30 s, is told to wait 8 s
    run(d, clock, 6)
    assert len(receiver.received) == 1
    run(d, clock, 2)
    assert len(receiver.received) == 2


def test_a_400_is_a_dead_letter_that_can_be_redriven(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    receiver.statuses = [400]
    d = dispatcher(store, clock, webhook_config(receiver.url))
    hit(store, clock, 1)
    run(d, clock, 120)
    assert len(receiver.received) == 1  # not retried: the receiver refused it
    log = SqlNotificationLog(store)
    (dead,), _ = log.notifications("dead", 10, None)
    assert dead.last_error.startswith("HTTP 400")
    log.redrive(dead.id, "key:ana", clock.now)
    run(d, clock, 1)
    assert len(receiver.received) == 2
    assert log.notifications("dead", 10, None) == ([], None)
    assert receiver.received[1].json()["notification_id"] == dead.id


def test_network_errors_retry_until_max_attempts_then_dead(store: SqlStore, clock: FixedClock) -> None:
    d = dispatcher(store, clock, webhook_config("http://127.0.0.1:9"))  # nothing listens on port 9
    hit(store, clock, 1)
    run(d, clock, 200)
    (dead,), _ = SqlNotificationLog(store).notifications("dead", 10, None)
    assert dead.attempts == 4


def test_silences_suppress_what_they_match_with_the_reason_and_expire(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    d = dispatcher(store, clock, webhook_config(receiver.url))
    silences = SqlSilenceStore(store)
    silence = silences.create_silence(
        ["customer_id=c1", "rule_id=~velo.*"], clock.now, clock.now + 600, "key:ana", "customer on holiday", clock.now
    )
    hit(store, clock, 1)  # matches
    hit(store, clock, 2, rule="other", key="k2")  # another rule: not silenced
    run(d, clock, 40)
    alerts = {a.rule_id: a for a in store.list_alerts(AlertQuery())[0]}
    assert alerts["velocity"].status == "suppressed"
    assert [a["rule_id"] for a in receiver.received[0].json()["alerts"]] == ["other"]
    velocity = store.get_alert(alerts["velocity"].id)
    assert any(h.action == "suppress" and h.reason == f"silenced by {silence.id}" for h in velocity.history)
    silences.expire_silence(silence.id, "key:ana", clock.now)
    hit(store, clock, 3)  # a new hit after expiry gets through
    run(d, clock, 400)
    assert store.get_alert(alerts["velocity"].id).status == "open"
    assert any("velocity" in [a["rule_id"] for a in r.json()["alerts"]] for r in receiver.received[1:])


def test_inhibition_mutes_targets_while_the_source_is_active(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    config = webhook_config(receiver.url)
    config["inhibit_rules"] = [
        {"source_matchers": ["severity=critical"], "target_matchers": ["severity=medium"], "equal": ["customer_id"]}
    ]
    d = dispatcher(store, clock, config)
    hit(store, clock, 1, rule="ato", key="c1", severity="critical")
    run(d, clock, 1)
    hit(store, clock, 2, rule="login_burst", key="c1", severity="medium")  # same customer: muted
    hit(store, clock, 3, rule="login_burst", key="c2", severity="medium", customer_id="c2")  # other customer: not
    run(d, clock, 40)
    status = {(a.rule_id, a.customer_id): a for a in store.list_alerts(AlertQuery())[0]}
    muted = status[("login_burst", "c1")]
    assert muted.status == "suppressed"
    source_id = status[("ato", "c1")].id
    assert any(h.reason == f"inhibited by {source_id}" for h in store.get_alert(muted.id).history)
    assert status[("login_burst", "c2")].status == "open"


@pytest.mark.parametrize(
    ("equal", "target", "muted"),
    [
        (["card"], {"key": "k1"}, True),  # the same card
        (["card"], {"key": "k2"}, False),  # another card of the same customer
        (["customer_id"], {"key": "k2", "customer_id": None}, True),  # neither has a customer: equal
        (["customer_id"], {"key": "k2", "customer_id": "c2"}, False),
        ([], {"key": "k2", "customer_id": "c2"}, True),  # no equal: any source inhibits
    ],
)
def test_inhibition_honours_equal_on_any_label(
    store: SqlStore, clock: FixedClock, equal: list[str], target: dict[str, Any], muted: bool
) -> None:
    config = {
        "inhibit_rules": [
            {"source_matchers": ["severity=critical"], "target_matchers": ["severity=medium"], "equal": equal}
        ]
    }
    d = dispatcher(store, clock, config)
    hit(store, clock, 1, rule="ato", key="k1", severity="critical", customer_id=None)
    run(d, clock, 1)
    hit(store, clock, 2, rule="login_burst", severity="medium", **target)
    run(d, clock, 1)
    status = {a.rule_id: a.status for a in store.list_alerts(AlertQuery())[0]}
    assert status == {"ato": "open", "login_burst": "suppressed" if muted else "open"}


def test_a_suppressed_source_inhibits_nothing(store: SqlStore, clock: FixedClock) -> None:
    config = {"inhibit_rules": [{"source_matchers": ["severity=critical"], "target_matchers": ["severity=medium"]}]}
    d = dispatcher(store, clock, config)
    SqlSilenceStore(store).create_silence(["rule_id=ato"], clock.now, clock.now + 60, "key:ana", "noisy", clock.now)
    hit(store, clock, 1, rule="ato", key="k1", severity="critical")
    run(d, clock, 1)
    hit(store, clock, 2, rule="login_burst", key="k2", severity="medium")
    run(d, clock, 1)
    status = {a.rule_id: a.status for a in store.list_alerts(AlertQuery())[0]}
    assert status == {"ato": "suppressed", "login_burst": "open"}


def test_slack_and_pagerduty_payloads_match_their_documented_shapes(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    config = {
        "receivers": [
            {"name": "slack", "slack": {"url": receiver.url + "/slack"}},
            {
                "name": "pd",
                "pagerduty": {"url": receiver.url + "/v2/enqueue", "routing_key_env": "RINGFENCE_SECRET_TEST_PD"},
            },
        ],
        "route": {
            "group_wait": "0s",
            "routes": [
                {"matchers": ["severity=~high|critical"], "receiver": "pd", "continue": True},
                {"receiver": "slack"},
            ],
        },
    }
    d = dispatcher(store, clock, config)
    hit(store, clock, 1)
    run(d, clock, 2)
    by_path = {r.path: r.json() for r in receiver.received}
    slack = by_path["/slack"]
    assert isinstance(slack["text"], str)
    assert slack["text"]
    assert slack["blocks"][0]["type"] == "header"
    assert all(b["type"] in ("header", "section", "context") for b in slack["blocks"])
    event = by_path["/v2/enqueue"]
    assert event["routing_key"] == "pd-routing-key"
    assert event["event_action"] == "trigger"
    alert_id = event["dedup_key"]
    assert set(event["payload"]) >= {"summary", "source", "severity", "timestamp"}
    assert event["payload"]["severity"] in ("critical", "error", "warning", "info")
    store.transition(alert_id, Action.ACKNOWLEDGE, "key:ana", "", clock.now)
    store.transition(alert_id, Action.RESOLVE, "key:ana", "", clock.now)
    run(d, clock, 400)
    actions = [r.json()["event_action"] for r in receiver.received if r.path == "/v2/enqueue"]
    assert actions[0] == "trigger"
    assert actions[-1] == "resolve"
    assert all(r.json()["dedup_key"] == alert_id for r in receiver.received if r.path == "/v2/enqueue")


class _Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


def test_email_reaches_a_real_smtp_sink_as_text_and_html(store: SqlStore, clock: FixedClock) -> None:
    sink = _Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = {
            "receivers": [
                {
                    "name": "mail",
                    "email": {
                        "host": "127.0.0.1",
                        "port": port,
                        "sender": "ringfence@bank.test",
                        "to": ["fraud-team@bank.test"],
                    },
                }
            ],
            "route": {"receiver": "mail", "group_wait": "0s"},
        }
        d = dispatcher(store, clock, config)
        hit(store, clock, 1)
        run(d, clock, 2)
    finally:
        controller.stop()
    (raw,) = sink.messages
    message = email.message_from_bytes(raw)
    assert message["To"] == "fraud-team@bank.test"
    assert message["Subject"].startswith("[Ringfence FIRING] 1 alert(s)")
    kinds = sorted(part.get_content_type() for part in message.walk() if not part.is_multipart())
    assert kinds == ["text/html", "text/plain"]


def test_auto_resolve_after_the_rule_quiet_period(store: SqlStore, clock: FixedClock) -> None:
    d = dispatcher(store, clock, {}, auto_resolve=lambda: {"velocity": 600.0})
    hit(store, clock, 1)
    clock.advance(599)
    d.auto_resolve(clock.now)
    (alert,) = store.list_alerts(AlertQuery())[0]
    assert alert.status == "open"
    clock.advance(2)
    assert d.auto_resolve(clock.now) == 1
    resolved = store.get_alert(alert.id)
    assert resolved.status == "resolved"
    assert resolved.history[-1].action == "auto-resolve"


class _Stream:
    """Records what the dispatcher publishes to the live stream."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def test_every_change_is_shown_on_the_live_stream_as_the_pipeline_left_it(store: SqlStore, clock: FixedClock) -> None:
    stream = _Stream()
    d = dispatcher(store, clock, {}, stream=stream)
    SqlSilenceStore(store).create_silence(["rule_id=other"], clock.now, clock.now + 60, "key:ana", "noisy", clock.now)
    hit(store, clock, 1)
    hit(store, clock, 2)  # the same alert again
    hit(store, clock, 3, rule="other", key="k2")
    run(d, clock, 1)
    (velocity,) = [a for a in store.list_alerts(AlertQuery())[0] if a.rule_id == "velocity"]
    store.transition(velocity.id, Action.ACKNOWLEDGE, "key:ana", "", clock.now)
    run(d, clock, 1)
    assert [(e["change"], e["rule_id"], e["status"]) for e in stream.events] == [
        ("firing", "velocity", "open"),
        ("firing", "velocity", "open"),
        ("firing", "other", "suppressed"),
        ("acknowledged", "velocity", "acknowledged"),
    ]


def _told(receiver: RecordingReceiver) -> list[tuple[str, list[tuple[str, str]]]]:
    """What each request told: its status, and its alerts' (rule, status)."""
    told = []
    for r in receiver.received:
        body = r.json()
        told.append((body["status"], sorted((a["rule_id"], a["status"]) for a in body["alerts"])))
    return told


def _resolved_while_its_firing_waits(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> tuple[Dispatcher, str]:
    """An alert notified firing, answered 503 (a retry a minute on), then resolved."""
    receiver.statuses, receiver.retry_after = [503], "60"
    d = dispatcher(store, clock, webhook_config(receiver.url))
    hit(store, clock, 1)
    run(d, clock, 31)
    (alert_id,) = [a["id"] for a in receiver.received[0].json()["alerts"]]
    store.transition(alert_id, Action.RESOLVE, "key:ana", "fixed", clock.now)
    return d, alert_id


def test_a_firing_notification_awaiting_its_retry_is_superseded_by_the_resolution_and_never_sent_after_it(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    d, alert_id = _resolved_while_its_firing_waits(store, clock, receiver)
    run(d, clock, 300)  # past the firing one's retry
    assert _told(receiver) == [("firing", [("velocity", "open")]), ("resolved", [("velocity", "resolved")])]
    log = SqlNotificationLog(store)
    (old,), _ = log.notifications("superseded", 10, None)
    (new,), _ = log.notifications("sent", 10, None)
    assert old.id == receiver.received[0].json()["notification_id"]
    assert new.id == receiver.received[1].json()["notification_id"]
    assert old.last_error == f"superseded by {new.id}"
    assert old.to_dict()["sent_at"] is None
    assert log.count_by_status() == {"superseded": 1, "sent": 1}
    history = [h.reason for h in store.get_alert(alert_id).history if h.action == "notify"]
    assert history == [f"notified via hook ({new.id})"]


def test_a_superseded_notification_hands_its_resolved_alerts_to_the_one_that_replaces_it(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    config = webhook_config(receiver.url)
    config["retry"] = {"base_delay": "20m", "max_delay": "40m", "max_attempts": 4}  # a retry 10 to 20 min on
    d = dispatcher(store, clock, config)
    hit(store, clock, 1)
    hit(store, clock, 2, rule="other", key="k2")  # the same customer's group
    run(d, clock, 31)
    ids = {a["rule_id"]: a["id"] for a in receiver.received[0].json()["alerts"]}
    receiver.statuses = [503]
    store.transition(ids["velocity"], Action.RESOLVE, "key:ana", "fixed", clock.now)
    run(d, clock, 1)
    hit(store, clock, 3, rule="third", key="k3")  # the group changes again: flushed after group_interval
    run(d, clock, 3600, step=5)  # past the retry the resolution would have had
    assert _told(receiver) == [
        ("firing", [("other", "open"), ("velocity", "open")]),
        ("firing", [("other", "open"), ("velocity", "resolved")]),  # answered 503
        ("firing", [("other", "open"), ("third", "open"), ("velocity", "resolved")]),  # it carries the resolution
    ]
    log = SqlNotificationLog(store)
    assert log.count_by_status() == {"superseded": 1, "sent": 2}


def test_a_superseded_notification_is_forgotten_with_the_sent_ones(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    d, _ = _resolved_while_its_firing_waits(store, clock, receiver)
    run(d, clock, 1)
    assert SqlNotificationLog(store).count_by_status() == {"superseded": 1, "sent": 1}
    clock.advance(31 * 86400)
    d.step()
    assert SqlNotificationLog(store).count_by_status() == {}


def test_a_groups_newer_notification_waits_for_the_send_under_way_and_supersedes_its_retry(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    held = threading.Event()
    receiver.statuses, receiver.holds = [503], [held]  # the firing one is answered late, and 503
    d = dispatcher(store, clock, webhook_config(receiver.url))
    hit(store, clock, 1)
    d.step(wait=0.1)
    clock.advance(31)
    d.step(wait=0.1)  # the dispatcher goes on while the send is under way, as its thread does
    receiver.wait_for(1)
    (alert_id,) = [a["id"] for a in receiver.received[0].json()["alerts"]]
    store.transition(alert_id, Action.RESOLVE, "key:ana", "fixed", clock.now)
    for _ in range(3):
        clock.advance(1)
        d.step(wait=0.1)
    assert len(receiver.received) == 1  # the resolution is made, and waits for the send before it
    assert SqlNotificationLog(store).count_by_status() == {"superseded": 1, "pending": 1}
    held.set()
    deadline = time.monotonic() + 10
    while len(receiver.received) < 2 and time.monotonic() < deadline:
        d.step(wait=0.1)  # records the answer (503), then sends the resolution
        time.sleep(0.05)
    run(d, clock, 120)
    assert _told(receiver) == [("firing", [("velocity", "open")]), ("resolved", [("velocity", "resolved")])]
    assert SqlNotificationLog(store).count_by_status() == {"superseded": 1, "sent": 1}


@pytest.mark.parametrize("muted", [False, True], ids=["resolved-untold", "silenced"])
def test_what_a_superseded_notification_told_and_its_successor_does_not_show_is_carried_as_it_was(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver, muted: bool
) -> None:
    """On a review: the successor carried only the resolved alerts, so an alert resolved under
    ``notify_resolved: false``, or silenced, after a notification told it firing was never told
    at all (the retry would have told it)."""
    config = webhook_config(receiver.url)
    config["notify_resolved"] = muted  # resolutions untold: the resolved alert leaves the group silently
    config["retry"] = {"base_delay": "20m", "max_delay": "40m", "max_attempts": 4}
    d = dispatcher(store, clock, config)
    receiver.statuses = [503]
    hit(store, clock, 1)
    hit(store, clock, 2, rule="other", key="k2")
    run(d, clock, 31)  # [velocity, other]: 503, its retry 10 to 20 min on
    velocity = next(a["id"] for a in receiver.received[0].json()["alerts"] if a["rule_id"] == "velocity")
    if muted:
        SqlSilenceStore(store).create_silence(["rule_id=velocity"], clock.now, clock.now + 86400, "key:ana", "noisy", 0)
        hit(store, clock, 3)  # velocity again: now suppressed
    else:
        store.transition(velocity, Action.RESOLVE, "key:ana", "fixed", clock.now)
    hit(store, clock, 4, rule="third", key="k3")
    run(d, clock, 3600, step=5)
    assert _told(receiver) == [
        ("firing", [("other", "open"), ("velocity", "open")]),
        ("firing", [("other", "open"), ("third", "open"), ("velocity", "open")]),  # velocity as the first told it
    ]
    assert SqlNotificationLog(store).count_by_status() == {"superseded": 1, "sent": 1}


def test_pagerduty_gets_an_acknowledged_alerts_trigger_first_whose_own_trigger_was_superseded(
    store: SqlStore, clock: FixedClock, receiver: RecordingReceiver
) -> None:
    """On a review: a trigger waiting for its retry was superseded by the alert's acknowledge,
    and PagerDuty drops an acknowledge of no incident: the alert was never paged. An
    acknowledged alert is triggered, then acknowledged (a trigger of an open incident only
    joins its log)."""
    config = {
        "receivers": [
            {
                "name": "pd",
                "pagerduty": {"url": receiver.url + "/v2/enqueue", "routing_key_env": "RINGFENCE_SECRET_TEST_PD"},
            }
        ],
        "route": {"receiver": "pd", "group_by": ["customer_id"], "group_wait": "0s", "group_interval": "5m"},
        "retry": {"base_delay": "20m", "max_delay": "40m", "max_attempts": 4},
    }
    d = dispatcher(store, clock, config)
    receiver.statuses = [503]
    hit(store, clock, 1)
    run(d, clock, 2)
    alert_id = receiver.received[0].json()["dedup_key"]
    store.transition(alert_id, Action.ACKNOWLEDGE, "key:ana", "looking", clock.now)
    run(d, clock, 3600, step=5)
    assert [(r.json()["event_action"], r.json()["dedup_key"]) for r in receiver.received] == [
        ("trigger", alert_id),  # answered 503
        ("trigger", alert_id),
        ("acknowledge", alert_id),
    ]
