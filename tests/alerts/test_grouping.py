"""group_wait, group_interval and repeat_interval, on an injected clock (no sleeps)."""

from __future__ import annotations

import hashlib

import msgspec

from ringfence.alerts.config import build_config
from ringfence.alerts.grouping import (
    MAX_GROUP_ALERTS,
    NEVER,
    GroupState,
    after_flush,
    group_key,
    is_due,
    keep_group,
    new_group,
    on_change,
    part_key,
    should_send,
)

ROUTE = build_config(
    {
        "receivers": [{"name": "hook", "webhook": {"url": "http://127.0.0.1:1"}}],
        "route": {
            "receiver": "hook",
            "group_by": ["customer_id"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
    }
).route


def test_a_new_group_waits_group_wait_then_sends() -> None:
    key, labels = group_key(ROUTE, {"customer_id": "c1", "rule_id": "r"})
    assert labels == {"customer_id": "c1"}
    group = new_group(ROUTE, key, labels, now=1000.0)
    on_change(group, ROUTE, 1000.0)
    on_change(group, ROUTE, 1010.0)  # more alerts during the wait do not delay it
    assert not is_due(group, 1029.9)
    assert is_due(group, 1030.0)
    assert should_send(group, "d1", ROUTE, 1030.0)
    after_flush(group, ROUTE, 1030.0, sent=True, firing=True, digest="d1")
    assert group.next_flush_at == 1030.0 + 4 * 3600


def test_changes_after_a_send_wait_for_group_interval() -> None:
    group = new_group(ROUTE, "g", {}, 0.0)
    after_flush(group, ROUTE, 30.0, sent=True, firing=True, digest="d1")
    on_change(group, ROUTE, 60.0)
    assert group.next_flush_at == 330.0  # last send + 5 min
    on_change(group, ROUTE, 1000.0)
    assert group.next_flush_at == 330.0  # an earlier schedule stands


def test_an_unchanged_group_repeats_only_after_repeat_interval() -> None:
    group = new_group(ROUTE, "g", {}, 0.0)
    after_flush(group, ROUTE, 30.0, sent=True, firing=True, digest="d1")
    assert not should_send(group, "d1", ROUTE, 30.0 + 3600)  # same alerts, same states: nothing new to say
    assert should_send(group, "d2", ROUTE, 30.0 + 3600)  # changed
    assert should_send(group, "d1", ROUTE, 30.0 + 4 * 3600)  # repeat


def test_a_resolution_is_sent_at_once() -> None:
    group = new_group(ROUTE, "g", {}, 0.0)
    after_flush(group, ROUTE, 30.0, sent=True, firing=True, digest="d1")
    on_change(group, ROUTE, 40.0, urgent=True)
    assert is_due(group, 40.0)


def test_a_group_with_nothing_firing_is_not_scheduled_again() -> None:
    group = new_group(ROUTE, "g", {}, 0.0)
    after_flush(group, ROUTE, 30.0, sent=True, firing=False, digest="d1")
    assert group.next_flush_at == NEVER
    assert not is_due(group, 1e17)
    assert msgspec.json.decode(msgspec.json.encode(group), type=GroupState) == group  # it can be stored


def test_each_max_group_alerts_that_join_make_a_part_and_the_first_part_outlives_its_alerts() -> None:
    assert [part_key("g", n) for n in (0, MAX_GROUP_ALERTS - 1, MAX_GROUP_ALERTS, 2 * MAX_GROUP_ALERTS)] == [
        "g",
        "g",
        "g.1",
        "g.2",
    ]
    first = new_group(ROUTE, "g", {}, 0.0)
    assert not keep_group(first)
    first.joined = MAX_GROUP_ALERTS + 1  # it counted alerts into another part
    assert keep_group(first)


def test_a_group_is_one_set_of_label_values_only() -> None:
    """A hostile test: the group's key joined its labels' values with "|", which values from
    events may hold, so grouped by [card, customer_id] two customers' alerts could join one
    group (and one be sent the other's). Values are escaped; a value without "|" or "\\"
    keeps the key it had, so groups under way keep their alerts across the upgrade."""
    route = build_config(
        {
            "receivers": [{"name": "hook", "webhook": {"url": "http://127.0.0.1:1"}}],
            "route": {"receiver": "hook", "group_by": ["card", "customer_id"]},
        }
    ).route
    first, _ = group_key(route, {"card": "1|customer_id=cus_a", "customer_id": "cus_b"})
    second, _ = group_key(route, {"card": "1", "customer_id": "cus_a|customer_id=cus_b"})
    escaped, _ = group_key(route, {"card": "1\\|customer_id=cus_a", "customer_id": "cus_b"})
    assert len({first, second, escaped}) == 3
    plain, _ = group_key(route, {"card": "tok_1", "customer_id": "cus_b"})
    text = f"{route.id}|hook|card=tok_1|customer_id=cus_b"
    assert plain == "g_" + hashlib.sha256(text.encode()).hexdigest()[:24]
