"""Alert transitions on every runtime: acknowledge and resolve with who and why in the history;
what the status does not allow is a Conflict that changes nothing; doing it again changes
nothing; a hit after the resolution is a new alert."""

from __future__ import annotations

import pytest

from ringfence.alerts.model import Action, alert_id
from ringfence.errors import Conflict, NotFound
from tests.helpers.conformance import ANALYST, Harness, webhook_alerting
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.store import signal

VELOCITY = alert_id("velocity", "tok_1", 1)


def moves(runtime: Harness, alert: str) -> list[tuple[str, str, str | None, str | None, str]]:
    """The alert's history but the pipeline's notes: (actor, action, from, to, reason)."""
    return [
        (h.actor, h.action, h.from_status, h.to_status, h.reason)
        for h in runtime.get(alert).history
        if h.action not in ("route", "notify")
    ]


@pytest.fixture
def raised(runtime: Harness, receiver: RecordingReceiver) -> Harness:
    runtime.configure(webhook_alerting(receiver.url))
    runtime.hit(signal(1))
    runtime.step()
    return runtime


def test_acknowledge_then_resolve_with_the_history(raised: Harness) -> None:
    assert raised.transition(VELOCITY, Action.ACKNOWLEDGE, "on it").status == "acknowledged"
    raised.step()
    resolved = raised.transition(VELOCITY, Action.RESOLVE, "false positive")
    assert resolved.status == "resolved"
    assert moves(raised, VELOCITY) == [
        ("ringfence", "created", None, "open", "rule velocity matched event e1"),
        (ANALYST, "acknowledge", "open", "acknowledged", "on it"),
        (ANALYST, "resolve", "acknowledged", "resolved", "false positive"),
    ]
    assert [(e["action"], e["actor"], e["target"]) for e in raised.audit_entries()] == [
        ("alert.resolve", ANALYST, VELOCITY),
        ("alert.acknowledge", ANALYST, VELOCITY),
    ]


def test_acknowledging_a_resolved_alert_is_a_conflict_that_changes_nothing(raised: Harness) -> None:
    raised.transition(VELOCITY, Action.RESOLVE, "fixed")
    before = raised.get(VELOCITY)
    with pytest.raises(Conflict, match="cannot acknowledge an alert that is resolved"):
        raised.transition(VELOCITY, Action.ACKNOWLEDGE, "on it")
    assert raised.get(VELOCITY) == before
    assert [e["action"] for e in raised.audit_entries()] == ["alert.resolve"]


def test_doing_it_again_changes_nothing(raised: Harness) -> None:
    for _ in range(2):
        assert raised.transition(VELOCITY, Action.ACKNOWLEDGE, "on it").status == "acknowledged"
    for _ in range(2):
        assert raised.transition(VELOCITY, Action.RESOLVE, "fixed").status == "resolved"
    assert [action for _, action, *_ in moves(raised, VELOCITY)] == ["created", "acknowledge", "resolve"]
    assert [e["action"] for e in raised.audit_entries()] == ["alert.resolve", "alert.acknowledge"]


def test_a_suppressed_alert_can_be_resolved_but_not_acknowledged(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(webhook_alerting(receiver.url))
    runtime.create_silence(["rule_id=velocity"])
    runtime.hit(signal(1))
    runtime.step()
    with pytest.raises(Conflict, match="cannot acknowledge an alert that is suppressed"):
        runtime.transition(VELOCITY, Action.ACKNOWLEDGE)
    assert runtime.transition(VELOCITY, Action.RESOLVE, "known").status == "resolved"
    runtime.step()
    assert receiver.received == []  # nobody was told of it: nobody is told it is resolved


def test_a_hit_after_the_resolution_is_a_new_alert(raised: Harness) -> None:
    raised.hit(signal(2))
    assert raised.get(VELOCITY).count == 2  # deduplicated while active
    raised.transition(VELOCITY, Action.RESOLVE, "fixed")
    raised.clock.advance(1)  # (alerts created in one instant are listed in no set order)
    raised.hit(signal(3))
    again = alert_id("velocity", "tok_1", 2)
    assert raised.statuses() == {VELOCITY: "resolved", again: "open"}
    assert [a.id for a in raised.alerts()] == [again, VELOCITY]  # newest first
    assert raised.get(again).count == 1


def test_an_unknown_alert_is_not_found(runtime: Harness) -> None:
    with pytest.raises(NotFound):
        runtime.get("al_missing")
    with pytest.raises(NotFound):
        runtime.transition("al_missing", Action.ACKNOWLEDGE)
