"""Grouping on every runtime: alerts with the same ``group_by`` values are told together, once
``group_wait`` has passed; a changed group again after ``group_interval``, an unchanged one
after ``repeat_interval``; a resolution at once (``notify_resolved``); and a group that formed
again after it was dropped is told of its new alerts."""

from __future__ import annotations

from typing import Any

import pytest

from ringfence.alerts import grouping
from ringfence.alerts.model import Action, alert_id
from tests.helpers.conformance import Harness, webhook_alerting
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.store import signal

FIRST = alert_id("velocity", "tok_1", 1)
SECOND = alert_id("other", "tok_2", 1)
ELSEWHERE = alert_id("velocity", "tok_3", 1)


def told(receiver: RecordingReceiver) -> list[tuple[str, dict[str, str], list[tuple[str, str]]]]:
    """Each notification as (status, group labels, sorted (alert id, status)), in order."""
    bodies = [r.json() for r in receiver.received]
    return [(b["status"], b["group_labels"], sorted((a["id"], a["status"]) for a in b["alerts"])) for b in bodies]


def test_a_group_waits_to_collect_its_alerts_then_tells_them_once(
    runtime: Harness, receiver: RecordingReceiver
) -> None:
    runtime.configure(webhook_alerting(receiver.url, group_wait="30s"))
    for offset in range(3):
        runtime.hit(signal(offset))  # one alert, hit three times
    runtime.hit(signal(3, rule="other", key="tok_2"))  # the same customer: the same group
    runtime.hit(signal(4, key="tok_3", customer_id="c2"))  # another customer: another group
    runtime.step()
    runtime.step(29)
    assert receiver.received == []
    runtime.step(1)
    assert sorted(told(receiver), key=str) == [
        ("firing", {"customer_id": "c1"}, sorted([(FIRST, "open"), (SECOND, "open")])),
        ("firing", {"customer_id": "c2"}, [(ELSEWHERE, "open")]),
    ]
    assert runtime.get(FIRST).count == 3
    sent = runtime.notifications()
    assert sorted(n.status for n in sent) == ["sent", "sent"]
    assert {n.id for n in sent} == {r.json()["notification_id"] for r in receiver.received}
    assert {r.headers["x-ringfence-notification-id"] for r in receiver.received} == {n.id for n in sent}
    runtime.step(60)
    assert len(receiver.received) == 2


def test_a_group_that_changed_is_told_again_after_group_interval(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url, group_interval="5m"))
    runtime.hit(signal(1))
    runtime.step()
    runtime.clock.advance(10)
    runtime.hit(signal(2, rule="other", key="tok_2"))  # joins the group told 10 s ago
    runtime.step()
    runtime.step(289)
    assert told(receiver) == [("firing", {"customer_id": "c1"}, [(FIRST, "open")])]
    runtime.step(1)
    assert told(receiver)[1:] == [("firing", {"customer_id": "c1"}, sorted([(FIRST, "open"), (SECOND, "open")]))]


def test_an_unchanged_group_is_told_again_after_repeat_interval(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url, repeat_interval="1h"))
    runtime.hit(signal(1))
    runtime.step()
    runtime.hit(signal(2))  # another hit of the same alert changes nothing that is told
    runtime.step(3599)
    assert len(receiver.received) == 1
    runtime.step(1)
    assert told(receiver) == [("firing", {"customer_id": "c1"}, [(FIRST, "open")])] * 2
    assert len({r.json()["notification_id"] for r in receiver.received}) == 2


@pytest.mark.parametrize(("notify_resolved", "statuses"), [(True, ["firing", "resolved"]), (False, ["firing"])])
def test_a_resolution_is_told_at_once_if_asked(
    runtime: Harness, receiver: RecordingReceiver, notify_resolved: bool, statuses: list[str]
) -> None:
    config: dict[str, Any] = webhook_alerting(receiver.url, group_interval="5m")
    config["notify_resolved"] = notify_resolved
    runtime.configure(config)
    runtime.hit(signal(1))
    runtime.step()
    runtime.transition(FIRST, Action.RESOLVE, "fixed")
    runtime.step(1)  # well within group_interval
    assert [r.json()["status"] for r in receiver.received] == statuses
    if notify_resolved:
        assert told(receiver)[1] == ("resolved", {"customer_id": "c1"}, [(FIRST, "resolved")])
    runtime.step(3600)
    assert len(receiver.received) == len(statuses)


def test_a_second_incident_after_the_group_was_dropped_is_told(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url, group_wait="30s"))
    runtime.hit(signal(1))
    runtime.step()
    runtime.step(30)
    runtime.transition(FIRST, Action.RESOLVE, "fixed")
    runtime.step(1)  # the resolution is told; with nothing firing, the group is gone
    runtime.hit(signal(2))  # the same rule and key again: a new alert, in a new group
    runtime.step()
    assert len(receiver.received) == 2  # the new group waits
    runtime.step(30)
    again = alert_id("velocity", "tok_1", 2)
    assert told(receiver) == [
        ("firing", {"customer_id": "c1"}, [(FIRST, "open")]),
        ("resolved", {"customer_id": "c1"}, [(FIRST, "resolved")]),
        ("firing", {"customer_id": "c1"}, [(again, "open")]),
    ]
    assert len({r.json()["notification_id"] for r in receiver.received}) == 3
    assert runtime.statuses() == {FIRST: "resolved", again: "open"}


def test_an_acknowledgement_is_told_at_the_next_group_interval(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url, group_interval="5m"))
    runtime.hit(signal(1))
    runtime.step()
    runtime.clock.advance(10)
    runtime.transition(FIRST, Action.ACKNOWLEDGE, "on it")
    runtime.step()
    runtime.step(289)
    assert len(receiver.received) == 1
    runtime.step(1)
    assert told(receiver)[1:] == [("firing", {"customer_id": "c1"}, [(FIRST, "acknowledged")])]


def test_a_group_holds_a_bounded_number_of_alerts_the_rest_in_parts_told_on_their_own(
    runtime: Harness, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grouping, "MAX_GROUP_ALERTS", 3)
    config: dict[str, Any] = webhook_alerting(receiver.url, group_wait="30s", group_interval="5m")
    config["notify_resolved"] = True
    runtime.configure(config)
    ids = [alert_id("velocity", f"tok_{i}", 1) for i in range(7)]
    for i in range(7):
        runtime.hit(signal(i, key=f"tok_{i}"))  # one customer's: the same group labels
    runtime.step()
    runtime.step(30)
    parts = told(receiver)
    assert sorted([aid for aid, _ in alerts] for _, _, alerts in parts) == sorted(
        sorted(p) for p in (ids[:3], ids[3:6], ids[6:])
    )
    assert {(status, str(labels)) for status, labels, _ in parts} == {("firing", str({"customer_id": "c1"}))}
    runtime.transition(ids[4], Action.RESOLVE, "fixed")
    runtime.step(1)  # told at once, by its part alone
    assert told(receiver)[3:] == [
        ("firing", {"customer_id": "c1"}, sorted([(ids[3], "open"), (ids[4], "resolved"), (ids[5], "open")]))
    ]
    for aid in ids:
        if aid != ids[4]:
            runtime.transition(aid, Action.RESOLVE, "fixed")
    runtime.step(300)
    assert len(receiver.received) == 7  # each part's resolution once
    runtime.hit(signal(8, key="tok_8"))  # after every part emptied: a part of its own, told alone
    runtime.step()
    runtime.step(30)
    assert told(receiver)[7:] == [("firing", {"customer_id": "c1"}, [(alert_id("velocity", "tok_8", 1), "open")])]
    assert len(receiver.received) == 8


def test_an_alert_hit_again_stays_in_its_part_whatever_parts_came_since(
    runtime: Harness, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every hit of an alert is told to the pipeline: one in an older part joins no other."""
    monkeypatch.setattr(grouping, "MAX_GROUP_ALERTS", 3)
    runtime.configure(webhook_alerting(receiver.url, group_wait="30s", group_interval="5m"))
    for i in range(7):  # parts of (0, 1, 2), (3, 4, 5), (6)
        runtime.hit(signal(i, key=f"tok_{i}"))
    runtime.step()
    runtime.step(30)
    assert len(receiver.received) == 3
    for again in (0, 3, 6):  # each part's
        runtime.hit(signal(100 + again, key=f"tok_{again}"))
    runtime.step()
    runtime.step(300)
    assert len(receiver.received) == 3  # nothing changed that is told: each alert still in one part
    assert runtime.get(alert_id("velocity", "tok_3", 1)).count == 2
