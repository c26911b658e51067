"""Routing on every runtime: an alert goes to the first child route it matches, and on to its
siblings only while the matched route says ``continue``; one no child matches stays with its parent."""

from __future__ import annotations

import pytest

from ringfence.alerts.model import alert_id
from tests.helpers.conformance import Harness
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.store import signal

VELOCITY = alert_id("velocity", "tok_1", 1)


def routes(url: str, *, first_continues: bool) -> dict[str, object]:
    return {
        "receivers": [{"name": name, "webhook": {"url": f"{url}/{name}"}} for name in ("fraud", "cards", "default")],
        "route": {
            "receiver": "default",
            "group_wait": "0s",
            "routes": [
                {"matchers": ["severity=~high|critical"], "receiver": "fraud", "continue": first_continues},
                {"matchers": ["audience=fraud"], "receiver": "cards"},
                {"matchers": ["audience=fraud"], "receiver": "default"},  # never reached: cards stops there
            ],
        },
    }


@pytest.mark.parametrize(
    ("first_continues", "routed"),
    [
        (True, {"fraud": "route.routes[0]", "cards": "route.routes[1]"}),
        (False, {"fraud": "route.routes[0]"}),
    ],
    ids=["continue", "stop"],
)
def test_continue_sends_on_to_the_next_matching_sibling(
    runtime: Harness, receiver: RecordingReceiver, first_continues: bool, routed: dict[str, str]
) -> None:
    runtime.configure(routes(receiver.url, first_continues=first_continues))
    runtime.hit(signal(1))
    runtime.step()
    assert sorted(r.path for r in receiver.received) == sorted(f"/{name}" for name in routed)
    assert all([a["id"] for a in r.json()["alerts"]] == [VELOCITY] for r in receiver.received)
    history = [h.reason for h in runtime.get(VELOCITY).history if h.action == "route"]
    assert sorted(history) == sorted(f"routed by {route} to {name}" for name, route in routed.items())


def test_an_alert_no_child_route_matches_stays_with_the_parent(runtime: Harness, receiver: RecordingReceiver) -> None:
    runtime.configure(routes(receiver.url, first_continues=True))
    runtime.hit(signal(1, severity="low", audience="sre"))
    runtime.step()
    assert [r.path for r in receiver.received] == ["/default"]
