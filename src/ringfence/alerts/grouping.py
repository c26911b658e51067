"""When a group of alerts is notified: ``group_wait``, ``group_interval``, ``repeat_interval``.

Pure timing logic over a :class:`GroupState`, with time passed in, so it is tested with
a fake clock. As in Alertmanager: a new group waits ``group_wait`` to collect its first
alerts; later changes are sent at most every ``group_interval``; an unchanged group with
firing alerts is re-sent every ``repeat_interval``; a resolution is sent at once.

Unlike Alertmanager's, a group is bounded: alerts stay in it until they resolve, and a busy
rule's unresolved alerts are many (its group is read, written and notified whole). So each
:data:`MAX_GROUP_ALERTS` alerts that join a group's labels make a *part* of their own, the
first part counting them (:func:`part_key`): a part is notified on its own, with the same
labels, and never holds more.
"""

from __future__ import annotations

import hashlib

import msgspec

from ringfence.alerts.config import Route

MAX_GROUP_ALERTS = 500  # a notification's alerts at most (some 300 KB of JSON)
NEVER = 1e18  # the next flush of a group with nothing firing (JSON has no infinity to store)


class GroupState(msgspec.Struct, kw_only=True):
    """One group (route x receiver x group-by values) and its notification timing."""

    key: str
    route: str
    receiver: str
    labels: dict[str, str]
    alert_ids: list[str]
    created_at: float
    next_flush_at: float
    last_flush_at: float | None = None
    last_digest: str | None = None
    flushes: int = 0
    joined: int = 0  # on a group's first part: the alerts that ever joined it, so the part each joins
    last_notification: str | None = None  # the newest notification of this group: a newer one supersedes it


def part_key(key: str, joined: int) -> str:
    """The key of the part of group ``key`` that its ``joined``-th alert (from 0) joins."""
    part = joined // MAX_GROUP_ALERTS
    return key if part == 0 else f"{key}.{part}"


def keep_group(state: GroupState) -> bool:
    """Whether a flushed group stays: it holds firing alerts, or it is a first part that has
    counted alerts into others (its count says where the next one goes)."""
    return bool(state.alert_ids) or state.joined > MAX_GROUP_ALERTS


def group_key(route: Route, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The group an alert with ``labels`` joins on ``route``, and the group's labels."""
    values = {name: labels.get(name, "") for name in route.group_by}
    parts = "|".join(f"{k}={_escaped(v)}" for k, v in sorted(values.items()))
    text = route.id + "|" + route.receiver + "|" + parts
    return "g_" + hashlib.sha256(text.encode()).hexdigest()[:24], values


def _escaped(value: str) -> str:
    """A label's value without a bare "|": labels come from events' data, and grouped by
    [card, customer_id], ("1|customer_id=cus_a", "cus_b") read as ("1", "cus_a|customer_id=cus_b")
    before, so two customers' alerts could join one group, and one customer be sent the
    other's. Values without "|" or "\\", nearly all, keep the group they had."""
    if "|" in value or "\\" in value:
        return value.replace("\\", "\\\\").replace("|", "\\|")
    return value


def new_group(route: Route, key: str, labels: dict[str, str], now: float) -> GroupState:
    return GroupState(
        key=key,
        route=route.id,
        receiver=route.receiver,
        labels=labels,
        alert_ids=[],
        created_at=now,
        next_flush_at=now + route.group_wait,
    )


def on_change(state: GroupState, route: Route, now: float, *, urgent: bool = False) -> None:
    """An alert joined, changed or resolved: schedule a flush (``urgent``: as soon as possible)."""
    if state.last_flush_at is None:
        due = state.created_at + route.group_wait  # still collecting the first batch
    else:
        due = max(now, state.last_flush_at + route.group_interval)
    if urgent:
        due = now
    state.next_flush_at = min(state.next_flush_at, due)


def is_due(state: GroupState, now: float) -> bool:
    return now >= state.next_flush_at


def should_send(state: GroupState, digest: str, route: Route, now: float) -> bool:
    """At a flush: send if the group changed, or if it is unchanged but due for a repeat."""
    if state.last_digest != digest or state.last_flush_at is None:
        return True
    return now >= state.last_flush_at + route.repeat_interval


def after_flush(state: GroupState, route: Route, now: float, *, sent: bool, firing: bool, digest: str) -> None:
    """Record a flush; the next one is the repeat (or never, if nothing is firing)."""
    if sent:
        state.last_flush_at = now
        state.last_digest = digest
        state.flushes += 1
    base = state.last_flush_at if state.last_flush_at is not None else now
    state.next_flush_at = base + route.repeat_interval if firing else NEVER
