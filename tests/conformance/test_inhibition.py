"""Inhibition on every runtime: while a firing source alert matches a rule's source matchers,
the target alerts agreeing with it on every ``equal`` label are suppressed, whatever their
customer (or none); a suppressed source inhibits nothing."""

from __future__ import annotations

from typing import Any

import pytest

from ringfence.alerts.model import Action, alert_id
from tests.helpers.conformance import Harness, webhook_alerting
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.store import signal

SOURCE = alert_id("ato", "k1", 1)
TARGET = alert_id("login_burst", "k2", 1)


def critical_inhibits_medium(url: str, equal: list[str]) -> dict[str, Any]:
    config = webhook_alerting(url, group_by=["rule_id"])
    config["inhibit_rules"] = [
        {"source_matchers": ["severity=critical"], "target_matchers": ["severity=medium"], "equal": equal}
    ]
    return config


@pytest.mark.parametrize(
    ("equal", "source", "target", "inhibited"),
    [
        (["customer_id"], {"customer_id": "c1"}, {"customer_id": "c1"}, True),
        (["customer_id"], {"customer_id": "c1"}, {"customer_id": "c2"}, False),
        (["customer_id"], {"customer_id": None}, {"customer_id": None}, True),  # neither has one: equal
        (["customer_id"], {"customer_id": None}, {"customer_id": "c2"}, False),
        (["customer_id"], {"customer_id": "c1"}, {"customer_id": None}, False),
        # a label of the rule's, across customers
        (
            ["card"],
            {"customer_id": "c1", "labels": {"card": "tok_9"}},
            {"customer_id": "c2", "labels": {"card": "tok_9"}},
            True,
        ),
        (
            ["card"],
            {"customer_id": "c1", "labels": {"card": "tok_9"}},
            {"customer_id": "c1", "labels": {"card": "tok_8"}},
            False,
        ),
        (
            ["card"],
            {"customer_id": None, "labels": {"card": "tok_9"}},
            {"customer_id": "c2", "labels": {"card": "tok_9"}},
            True,
        ),
        # a field every alert has, across customers
        (["audience"], {"customer_id": "c1"}, {"customer_id": "c2"}, True),
        (["audience"], {"customer_id": "c1"}, {"customer_id": "c2", "audience": "sre"}, False),
        (["customer_id", "card"], {"labels": {"card": "tok_9"}}, {"labels": {"card": "tok_9"}}, True),
        ([], {"customer_id": "c1"}, {"customer_id": None}, True),  # no equal: any source inhibits
    ],
    ids=[
        "customer-same",
        "customer-other",
        "customer-neither",
        "customer-only-target",
        "customer-only-source",
        "label-across-customers",
        "label-other-card",
        "label-source-without-customer",
        "field-across-customers",
        "field-differs",
        "customer-and-label",
        "no-equal",
    ],
)
def test_inhibition_honours_equal(
    runtime: Harness,
    receiver: RecordingReceiver,
    equal: list[str],
    source: dict[str, Any],
    target: dict[str, Any],
    inhibited: bool,
) -> None:
    runtime.configure(critical_inhibits_medium(receiver.url, equal))
    runtime.hit(signal(1, rule="ato", key="k1", severity="critical", **source))
    runtime.step()
    runtime.hit(signal(2, rule="login_burst", key="k2", severity="medium", **target))
    runtime.step()
    assert runtime.statuses() == {SOURCE: "open", TARGET: "suppressed" if inhibited else "open"}
    muted = [h for h in runtime.get(TARGET).history if h.action == "suppress"]
    assert [h.reason for h in muted] == ([f"inhibited by {SOURCE}"] if inhibited else [])
    told = {a["id"] for r in receiver.received for a in r.json()["alerts"]}
    assert told == ({SOURCE} if inhibited else {SOURCE, TARGET})


def test_an_acknowledged_source_still_inhibits(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(critical_inhibits_medium(receiver.url, ["customer_id"]))
    runtime.hit(signal(1, rule="ato", key="k1", severity="critical"))
    runtime.step()
    runtime.transition(SOURCE, Action.ACKNOWLEDGE, "on it")
    runtime.hit(signal(2, rule="login_burst", key="k2", severity="medium"))
    runtime.step()
    assert runtime.statuses() == {SOURCE: "acknowledged", TARGET: "suppressed"}


def test_a_suppressed_source_inhibits_nothing(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(critical_inhibits_medium(receiver.url, ["customer_id"]))
    runtime.create_silence(["rule_id=ato"], "noisy")
    runtime.hit(signal(1, rule="ato", key="k1", severity="critical"))
    runtime.step()
    runtime.hit(signal(2, rule="login_burst", key="k2", severity="medium"))
    runtime.step()
    assert runtime.statuses() == {SOURCE: "suppressed", TARGET: "open"}
    assert [a["id"] for r in receiver.received for a in r.json()["alerts"]] == [TARGET]


def test_a_resolved_source_inhibits_nothing(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(critical_inhibits_medium(receiver.url, ["customer_id"]))
    runtime.hit(signal(1, rule="ato", key="k1", severity="critical"))
    runtime.step()
    runtime.transition(SOURCE, Action.RESOLVE, "handled")
    runtime.hit(signal(2, rule="login_burst", key="k2", severity="medium"))
    runtime.step()
    assert runtime.statuses() == {SOURCE: "resolved", TARGET: "open"}


def test_an_inhibited_alert_opens_again_at_its_next_hit_once_the_source_is_resolved(
    runtime: Harness, receiver: RecordingReceiver
) -> None:
    runtime.configure(critical_inhibits_medium(receiver.url, ["customer_id"]))
    runtime.hit(signal(1, rule="ato", key="k1", severity="critical"))
    runtime.hit(signal(2, rule="login_burst", key="k2", severity="medium"))
    runtime.step()
    runtime.transition(SOURCE, Action.RESOLVE, "handled")
    runtime.step()
    assert runtime.statuses() == {SOURCE: "resolved", TARGET: "suppressed"}  # nothing changed it since
    runtime.hit(signal(3, rule="login_burst", key="k2", severity="medium"))
    runtime.step()
    assert runtime.statuses() == {SOURCE: "resolved", TARGET: "open"}
    assert TARGET in {a["id"] for r in receiver.received for a in r.json()["alerts"]}
