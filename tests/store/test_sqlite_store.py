"""The SQLite store: dedup into alerts, deterministic ids, lifecycle, atomic checkpoints."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ringfence.alerts import Action, alert_id
from ringfence.alerts.model import AlertQuery
from ringfence.engine.rules import AlertSignal
from ringfence.errors import NotFound, StoreError
from ringfence.store import Checkpoint, SqliteStore
from ringfence.store.sql import SqlStore
from tests.helpers.store import signal


@pytest.fixture
def store(any_store: SqlStore) -> SqlStore:
    return any_store


def commit(store: SqlStore, *signals: AlertSignal, offset: int = 0) -> list[str]:
    return [aid for aid, _ in store.commit_batch(list(signals), Checkpoint("p", offset), now=1000.0)]


def test_repeated_hits_while_open_update_one_alert(store: SqlStore) -> None:
    created = commit(store, signal(1), signal(2), signal(3))
    assert created == [alert_id("velocity", "tok_1", 1)]
    alert = store.get_alert(created[0])
    assert alert.count == 3
    assert alert.status == "open"
    assert [e["event_id"] for e in alert.evidence["events"]] == ["e1", "e2", "e3"]
    assert alert.evidence["features"] == {"n": 3}
    assert alert.history[0].action == "created"


def test_a_new_alert_after_resolution_gets_the_next_occurrence_id(store: SqlStore) -> None:
    (first,) = commit(store, signal(1))
    store.transition(first, Action.RESOLVE, "key:analyst", "handled", now=1001.0)
    (second,) = commit(store, signal(2))
    assert second == alert_id("velocity", "tok_1", 2) != first


def test_shadow_signals_count_hits_but_create_no_alert(store: SqlStore) -> None:
    assert commit(store, signal(1, mode="shadow")) == []
    assert store.count_alerts() == 0
    assert store.rule_hits() == {"velocity": {"shadow": 1}}


def test_ack_then_resolve_is_recorded_in_history_and_audit(store: SqlStore) -> None:
    (aid,) = commit(store, signal(1))
    store.transition(aid, Action.ACKNOWLEDGE, "key:ana", "looking", now=1001.0)
    alert = store.transition(aid, Action.RESOLVE, "key:ana", "false positive", now=1002.0)
    assert alert.status == "resolved"
    assert [(h.action, h.from_status, h.to_status, h.actor) for h in alert.history] == [
        ("created", None, "open", "ringfence"),
        ("acknowledge", "open", "acknowledged", "key:ana"),
        ("resolve", "acknowledged", "resolved", "key:ana"),
    ]
    audit, _ = store.list_audit()
    assert [a["action"] for a in audit] == ["alert.resolve", "alert.acknowledge"]


def test_acknowledging_a_resolved_alert_is_a_conflict(store: SqlStore) -> None:
    (aid,) = commit(store, signal(1))
    store.transition(aid, Action.RESOLVE, "a", "", now=1.0)
    with pytest.raises(StoreError, match="cannot acknowledge an alert that is resolved"):
        store.transition(aid, Action.ACKNOWLEDGE, "a", "", now=2.0)


def test_unknown_alerts_are_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        store.get_alert("al_nope")
    with pytest.raises(NotFound):
        store.transition("al_nope", Action.ACKNOWLEDGE, "a", "", now=1.0)


def test_listing_filters_and_pages_newest_first(store: SqlStore) -> None:
    for i in range(5):
        commit(store, signal(i, key=f"k{i}", severity="critical" if i % 2 else "low"))
    page, cursor = store.list_alerts(AlertQuery(limit=2))
    assert [a.dedup_key for a in page] == ["k4", "k3"]
    page2, cursor2 = store.list_alerts(AlertQuery(limit=2, cursor=cursor))
    assert [a.dedup_key for a in page2] == ["k2", "k1"]
    page3, cursor3 = store.list_alerts(AlertQuery(limit=2, cursor=cursor2))
    assert [a.dedup_key for a in page3] == ["k0"]
    assert cursor3 is None
    critical, _ = store.list_alerts(AlertQuery(severity=("critical",)))
    assert {a.dedup_key for a in critical} == {"k1", "k3"}
    assert store.list_alerts(AlertQuery(customer_id="nobody"))[0] == []
    recent, _ = store.list_alerts(AlertQuery(since=103.0))
    assert {a.dedup_key for a in recent} == {"k3", "k4"}


def test_a_failed_batch_commits_neither_alerts_nor_offset(store: SqlStore) -> None:
    unbindable = Checkpoint("p", 7, state_changes=[("f", "k", object())])  # type: ignore[list-item]
    store.commit_batch([signal(1)], Checkpoint("p", 5), now=1.0)
    with pytest.raises((sqlite3.Error, TypeError)):
        store.commit_batch([signal(2, key="other")], unbindable, now=2.0)
    assert store.load_checkpoint("p")[0] == 5
    assert store.count_alerts() == 1


def test_checkpoint_state_and_watermarks_round_trip(store: SqlStore) -> None:
    store.commit_batch([], Checkpoint("p", 9, [("f", "k1", b"x"), ("f", "k2", b"y")], {0: 55.0}), now=1.0)
    store.commit_batch([], Checkpoint("p", 10, [("f", "k1", None)], {1: 66.0}), now=2.0)
    assert store.load_checkpoint("p") == (10, {0: 55.0, 1: 66.0})
    assert list(store.iter_feature_state()) == [("f", "k2", b"y")]


def test_reopening_an_existing_store_keeps_its_data(tmp_path: Path) -> None:
    commit(SqliteStore(tmp_path / "s.db"), signal(1))
    assert SqliteStore(tmp_path / "s.db").count_alerts() == 1
