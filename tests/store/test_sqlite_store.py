"""The SQL store (SQLite and PostgreSQL): dedup into alerts, deterministic ids, lifecycle,
atomic checkpoints, silences and the notification log with their cursors."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from ringfence.alerts import Action, alert_id, stages
from ringfence.alerts.delivery import NextStep
from ringfence.alerts.lifecycle import MAX_EVIDENCE_EVENTS
from ringfence.alerts.model import SHOWN_ENTRIES, AlertQuery, NotificationStatus
from ringfence.alerts.silences import MAX_CURRENT_SILENCES, SilenceError, TooManySilences
from ringfence.clock import iso
from ringfence.engine.packed import pack_rows
from ringfence.engine.rules import AlertSignal
from ringfence.errors import Conflict, NotFound, RequestError, StoreError, StoreUnavailable
from ringfence.store import Checkpoint, SqliteStore
from ringfence.store import sql as sql_module
from ringfence.store.base import LateEvent
from ringfence.store.notifications import SqlNotificationLog
from ringfence.store.quarantine import is_store_failure
from ringfence.store.silences import SqlSilenceStore, current_silences
from ringfence.store.sql import LOOKUP_KEYS, SqlStore
from tests.helpers.store import DictState, signal


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


def test_hits_in_one_batch_leave_the_alerts_as_one_batch_each_would(tmp_path: Path, store: SqlStore) -> None:
    """A batch merges its hits on one alert in memory and writes them once: the same alerts,
    counts, evidence, first/last seen, titles and rule hits as committing them one by one."""
    hits = [signal(i, key=f"tok_{i % 3}", t=100.0 - 5 * (i % 4)) for i in range(1, 40)]
    hits += [signal(90, mode="shadow"), signal(91, rule="other", key="tok_1")]
    one_by_one = SqliteStore(tmp_path / "one.db")
    for offset, s in enumerate(hits):
        one_by_one.commit_batch([s], Checkpoint("p", offset), now=1000.0)
    created = commit(store, *hits)
    assert sorted(created) == sorted(a.id for a in one_by_one.list_alerts(AlertQuery(limit=100))[0])
    for aid in created:
        batched, single = store.get_alert(aid), one_by_one.get_alert(aid)
        assert (batched.count, batched.first_seen, batched.last_seen, batched.title, batched.evidence) == (
            single.count,
            single.first_seen,
            single.last_seen,
            single.title,
            single.evidence,
        )
    assert store.rule_hits() == one_by_one.rule_hits() == {"velocity": {"live": 39, "shadow": 1}, "other": {"live": 1}}
    one_by_one.close()


def test_a_batch_over_many_keys_finds_each_ones_active_alert_or_next_occurrence(store: SqlStore) -> None:
    """Keys are looked up a chunk at a time (more than one chunk here, the last one short): a
    key with an active alert is deduplicated into it, one whose alerts were resolved gets the
    next occurrence, a new one its first; keys of other rules never mix."""
    keys = [f"tok_{i}" for i in range(2 * LOOKUP_KEYS + 22)]
    active, resolved = keys[:50], keys[50:100]
    commit(store, *(signal(i, key=k) for i, k in enumerate(active + resolved)))
    for k in resolved:
        store.transition(alert_id("velocity", k, 1), Action.RESOLVE, "key:analyst", "handled", now=1001.0)
    commit(store, signal(500, rule="other", key=keys[-1]))  # another rule's alert under a new key
    with store.transaction() as conn:  # two active alerts of one key (the store never makes them): the newest wins
        conn.execute(
            "INSERT INTO alerts (id, rule_id, rule_version, severity, audience, status, customer_id, dedup_key, "
            "occurrence, labels, title, summary, evidence, first_seen, last_seen, created_at, updated_at, count) "
            "SELECT 'al_newest', rule_id, rule_version, severity, audience, status, customer_id, dedup_key, 9, "
            "labels, title, summary, evidence, first_seen, last_seen, created_at, updated_at, count FROM alerts "
            "WHERE id = ?",
            (alert_id("velocity", active[0], 1),),
        )
    created = commit(store, *(signal(1000 + i, key=k) for i, k in enumerate(keys)), offset=1)
    assert sorted(created) == sorted(
        [alert_id("velocity", k, 2) for k in resolved] + [alert_id("velocity", k, 1) for k in keys[100:]]
    )
    assert {store.get_alert(alert_id("velocity", k, 1)).count for k in active[1:]} == {2}
    assert (store.get_alert("al_newest").count, store.get_alert(alert_id("velocity", active[0], 1)).count) == (2, 1)
    assert store.get_alert(alert_id("other", keys[-1], 1)).count == 1


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


def test_an_alert_shows_its_newest_history_and_comments_and_counts_the_rest(store: SqlStore) -> None:
    """Both grow without end (an analyst's comments, a flapping alert's changes): a read of an
    alert stays bounded, and a page of them carries neither (a pen test's 500 alerts of 100
    comments of 4,000 characters made one page of some 200 MB)."""
    (aid,) = commit(store, signal(1))
    (other,) = commit(store, signal(1, key="tok_2"), offset=1)
    for i in range(SHOWN_ENTRIES + 20):
        store.assign(aid, f"analyst-{i}", "key:ana", "", now=1001.0 + i)
        store.comment(aid, f"note {i}", "key:ana", now=1001.0 + i)
    alert = store.get_alert(aid)
    assert len(alert.history) == SHOWN_ENTRIES
    assert alert.history_omitted == 21  # "created" and the first 20 assignments
    assert [h.reason for h in alert.history] == [f"assigned to analyst-{i}" for i in range(20, SHOWN_ENTRIES + 20)]
    assert [c.text for c in alert.comments] == [f"note {i}" for i in range(20, SHOWN_ENTRIES + 20)]
    assert alert.comments_omitted == 20
    listed = {a.id: a for a in store.list_alerts(AlertQuery(limit=10))[0]}
    assert [(a.history, a.comments, a.history_omitted, a.comments_omitted) for a in listed.values()] == [
        ([], [], 0, 0)
    ] * 2
    assert listed[aid].assignee == alert.assignee
    assert (len(store.get_alert(other).history), store.get_alert(other).history_omitted) == (1, 0)
    assert (store.get_alert(other).comments, store.get_alert(other).comments_omitted) == ([], 0)


def test_an_alert_keeps_a_bounded_number_of_comments(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile test: one analyst key added 150 comments a second of 4,000 characters each to
    one alert, bounded only by its rate limit. Past MAX_COMMENTS: 409, nothing written."""
    monkeypatch.setattr(sql_module, "MAX_COMMENTS", 5)
    (aid,) = commit(store, signal(1))
    (other,) = commit(store, signal(1, key="tok_2"), offset=1)
    for i in range(5):
        store.comment(aid, f"note {i}", "key:ana", now=1001.0 + i)
    audited = len(store.list_audit(limit=100)[0])
    with pytest.raises(RequestError) as refused:
        store.comment(aid, "one more", "key:ana", now=1010.0)
    assert (refused.value.status, refused.value.code) == (409, "too_many_comments")
    assert [c.text for c in store.get_alert(aid).comments] == [f"note {i}" for i in range(5)]
    assert len(store.list_audit(limit=100)[0]) == audited
    assert store.comment(other, "another alert's", "key:ana", now=1011.0).comments[-1].text == "another alert's"


def test_acknowledging_a_resolved_alert_is_a_conflict(store: SqlStore) -> None:
    (aid,) = commit(store, signal(1))
    store.transition(aid, Action.RESOLVE, "a", "", now=1.0)
    with pytest.raises(Conflict, match="cannot acknowledge an alert that is resolved"):
        store.transition(aid, Action.ACKNOWLEDGE, "a", "", now=2.0)
    assert store.get_alert(aid).status == "resolved"
    assert [a["action"] for a in store.list_audit()[0]] == ["alert.resolve"]  # the refusal changed nothing


def test_evidence_keeps_the_latest_events(store: SqlStore) -> None:
    (aid,) = commit(store, *(signal(i) for i in range(MAX_EVIDENCE_EVENTS + 5)))
    alert = store.get_alert(aid)
    assert alert.count == MAX_EVIDENCE_EVENTS + 5
    assert len(alert.evidence["events"]) == MAX_EVIDENCE_EVENTS
    assert alert.evidence["events"][-1]["event_id"] == f"e{MAX_EVIDENCE_EVENTS + 4}"
    assert alert.last_seen > alert.first_seen


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


def test_a_page_looks_at_a_bounded_number_of_alerts_and_its_cursor_goes_on_past_them(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pen test: filters that match nothing read every alert (0.2 s at 500,000 each), and a
    key's 64 such requests at once held every other reader 13 s. A page looks at SCAN_ALERTS at
    most; following its cursors finds the same alerts as one unbounded read."""
    for i in range(10):
        commit(store, signal(i, key=f"k{i}", severity="critical" if i in (0, 1, 6) else "low"))
    everything = [a.dedup_key for a in store.list_alerts(AlertQuery(severity=("critical",)))[0]]
    assert everything == ["k6", "k1", "k0"]
    monkeypatch.setattr(sql_module, "SCAN_ALERTS", 3)
    pages: list[list[str]] = []
    cursor = None
    while True:
        page, cursor = store.list_alerts(AlertQuery(severity=("critical",), limit=2, cursor=cursor))
        pages.append([a.dedup_key for a in page])
        if cursor is None:
            break
    assert [key for page in pages for key in page] == everything
    assert [] in pages  # a window of three with none: a page of none, and a cursor past it
    assert len(pages) <= 10 // 3 + 2
    # a customer's: the window is its next alerts in its index (a re-test: a customer's 250,000
    # alerts were read whole for filters matching none)
    pages, cursor = [], None
    while True:
        page, cursor = store.list_alerts(AlertQuery(customer_id="c1", severity=("critical",), limit=2, cursor=cursor))
        pages.append([a.dedup_key for a in page])
        if cursor is None:
            break
    assert [key for page in pages for key in page] == everything
    assert len(pages) <= 10 // 3 + 2
    assert walk(store, AlertQuery(customer_id="c1", limit=500)) == walk(store, AlertQuery(limit=500))


def walk(store: SqlStore, query: AlertQuery) -> list[str]:
    """The alerts every page of ``query`` lists, following its cursors."""
    keys: list[str] = []
    while True:
        page, cursor = store.list_alerts(query)
        keys += [a.dedup_key for a in page]
        if cursor is None:
            return keys
        query = dataclasses.replace(query, cursor=cursor)


def test_the_first_pages_cursor_tells_others_alert_count_only_to_the_nearest_window(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile test: an audience-limited key asking for its own alerts with filters matching
    none got the newest seq of every audience's less SCAN_ALERTS as its cursor: every other desk's
    alert count, live. The first window ends at a multiple of SCAN_ALERTS and spans two."""
    monkeypatch.setattr(sql_module, "SCAN_ALERTS", 4)
    cursors = []
    for i in range(20):
        commit(store, signal(i, key=f"k{i}", audience="fraud" if i < 2 else "customer"))
        cursors.append(store.list_alerts(AlertQuery(audience=("fraud",), status=("resolved",), limit=1))[1])
    assert len(set(cursors)) <= 20 // 4 + 1  # it moves every 4 alerts of others, not every one
    assert {int(c) % 4 for c in cursors if c is not None} == {0}
    assert walk(store, AlertQuery(audience=("fraud",), limit=1)) == ["k1", "k0"]  # and the pages go on to them


def limited_walk_cursors(store: SqlStore) -> list[str | None]:
    """The cursors a key limited to the fraud desk is given, a page of one alert at a time."""
    cursors: list[str | None] = []
    query = AlertQuery(audience=("fraud",), limit=1)
    while True:
        _, cursor = store.list_alerts(query)
        cursors.append(cursor)
        if cursor is None:
            return cursors
        query = dataclasses.replace(query, cursor=cursor)


def test_a_full_pages_cursor_tells_nothing_of_other_desks_alerts(tmp_path: Path, store: SqlStore) -> None:
    """A hostile test: a full page's cursor was its last alert's seq, so the gap between two of a
    desk's own alerts counted every other desk's alerts between them. The same fraud alerts, with
    none or 7 of another desk's after each, give the fraud desk the same cursors."""
    quiet = SqliteStore(tmp_path / "quiet.db")
    for i in range(4):
        commit(quiet, signal(i, key=f"fraud{i}", audience="fraud"))
        commit(store, signal(i, key=f"fraud{i}", audience="fraud"))
        for j in range(7):
            commit(store, signal(100 + 10 * i + j, key=f"other{i}.{j}", audience="customer"))
    cursors = limited_walk_cursors(store)
    assert cursors == limited_walk_cursors(quiet)
    assert len(cursors) == 4  # and they page through all four
    assert cursors[-1] is None
    assert walk(store, AlertQuery(audience=("fraud",), limit=1)) == ["fraud3", "fraud2", "fraud1", "fraud0"]
    quiet.close()


def test_a_cursor_naming_an_alert_the_caller_may_not_see_or_that_is_gone_goes_on_from_its_window(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another desk's alert, named in a forged cursor, answers as an alert that does not exist: from
    the top of the cursor's window, repeating alerts rather than skipping any."""
    monkeypatch.setattr(sql_module, "SCAN_ALERTS", 4)
    for i in range(6):
        commit(store, signal(i, key=f"k{i}", audience="customer" if i == 4 else "fraud"))
    others = alert_id("velocity", "k4", 1)
    forged = walk(store, AlertQuery(audience=("fraud",), limit=10, cursor=f"1.{others}"))
    missing = walk(store, AlertQuery(audience=("fraud",), limit=10, cursor=f"1.al_{'0' * 24}"))
    assert forged == missing == ["k5", "k3", "k2", "k1", "k0"]
    assert walk(store, AlertQuery(limit=10, cursor=f"1.{others}")) == ["k3", "k2", "k1", "k0"]  # one who may see it


def test_cursors_made_up_or_of_a_customers_list_tell_only_the_window(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: digits a caller made up bisected to the exact seq of its own alert (the window
    ran from them down), and a customer's list gave out the seq of its alerts' window floor, an
    alert of any desk. Made-up digits are taken up to a multiple of SCAN_ALERTS, and a
    customer's floor is one too; the pages still list every alert once."""
    monkeypatch.setattr(sql_module, "SCAN_ALERTS", 4)
    for i in range(30):
        commit(store, signal(i, key=f"k{i}", audience="fraud" if i % 3 == 0 else "customer"))
    fraud = AlertQuery(audience=("fraud",), limit=50)
    answers = [store.list_alerts(dataclasses.replace(fraud, cursor=str(d))) for d in (13, 14, 15, 16)]
    assert all(answer == answers[0] for answer in answers)  # one window: nothing between them to tell
    cursors: list[str] = []
    query = dataclasses.replace(fraud, customer_id="c1", limit=1)
    listed: list[str] = []
    while True:
        page, cursor = store.list_alerts(query)
        listed += [a.dedup_key for a in page]
        if cursor is None:
            break
        cursors.append(cursor)
        query = dataclasses.replace(query, cursor=cursor)
    assert listed == [f"k{i}" for i in range(27, -1, -3)]
    assert all(int(c) % 4 == 0 for c in cursors if c.isdigit())


def test_a_page_of_one_rules_alerts_reads_a_window_not_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: a page filtered by rule read every alert of the rule through the rule's index and
    sorted them (100,200 steps against 500 for a window of 100 among 20,000). It reads its window."""
    monkeypatch.setattr(sql_module, "SCAN_ALERTS", 100)
    store = SqliteStore(tmp_path / "rules.db")
    for start in range(0, 5000, 1000):
        commit(store, *(signal(i, key=f"k{i}") for i in range(start, start + 1000)), offset=start)
    conn = store.conn()

    def steps(query: AlertQuery) -> int:
        counted = [0]

        def step() -> int:
            counted[0] += 1
            return 0

        conn.set_progress_handler(step, 100)
        try:
            store.list_alerts(query)
        finally:
            conn.set_progress_handler(None, 0)
        return counted[0]

    window = steps(AlertQuery(severity=("low",), limit=50))  # matches none: a window's worth
    assert steps(AlertQuery(rule_id="velocity", severity=("low",), limit=50)) <= 2 * window + 2
    assert walk(store, AlertQuery(rule_id="velocity", limit=500))[:3] == ["k4999", "k4998", "k4997"]
    store.close()


@pytest.mark.parametrize("cursor", ["-1", "abc", "1.5", "", "1" * 19, "\uff11\uff12"])  # full-width digits
def test_a_cursor_the_store_did_not_give_out_is_a_400(store: SqlStore, cursor: str) -> None:
    for read in (
        lambda: store.list_alerts(AlertQuery(cursor=cursor)),
        lambda: SqlNotificationLog(store).notifications(None, 10, cursor),
    ):
        with pytest.raises(RequestError) as caught:
            read()
        assert (caught.value.status, caught.value.code) == (400, "invalid_cursor")


def test_the_notification_log_pages_without_skipping_notifications_made_at_one_instant(store: SqlStore) -> None:
    with store.pipeline() as pipeline:
        for i in range(5):  # one flush makes many notifications with the same created_at
            pipeline.add_notification(f"n_{i}", f"g{i}", "hook", {"alerts": [{"id": f"al_{i}"}]}, 1000.0)
        pipeline.add_notification("n_0", "g0", "hook", {"alerts": []}, 1001.0)  # owed once: a replay adds nothing
    log = SqlNotificationLog(store)
    seen: list[str] = []
    page, cursor = log.notifications(None, 2, None)
    seen += [n.id for n in page]
    while cursor is not None:
        assert cursor.isdigit()
        page, cursor = log.notifications(None, 2, cursor)
        seen += [n.id for n in page]
    assert seen == ["n_4", "n_3", "n_2", "n_1", "n_0"]  # newest first, each once
    assert log.notifications("sent", 10, None) == ([], None)
    assert log.count_by_status() == {"pending": 5}


def test_retention_forgets_sent_notifications_past_it_a_slice_a_transaction_and_keeps_the_rest(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages, "RETENTION_SLICE", 3)
    monkeypatch.setattr(stages, "RETENTION_SLICES", 2)
    now = 100 * 86400.0
    old, recent = now - stages.SENT_RETENTION_S - 60, now - 60
    sent = NextStep(NotificationStatus.SENT, 1, 0.0, "")
    dead = NextStep(NotificationStatus.DEAD, 5, 0.0, "HTTP 500")
    with store.pipeline() as pipeline:
        for i in range(8):
            pipeline.add_notification(f"old_{i}", "g", "hook", {"alerts": []}, old)
            pipeline.record_attempt(f"old_{i}", sent, old)
        pipeline.add_notification("recent", "g", "hook", {"alerts": []}, recent)
        pipeline.record_attempt("recent", sent, recent)
        pipeline.add_notification("dead", "g", "hook", {"alerts": []}, old)
        pipeline.record_attempt("dead", dead, old)
        pipeline.add_notification("pending", "g", "hook", {"alerts": []}, old)
        for i, at in enumerate((old, old, recent)):  # superseded ones go by when they were superseded
            pipeline.add_notification(f"superseded_{i}", "g", "hook", {"alerts": []}, old)
            assert pipeline.supersede(f"superseded_{i}", "recent", at) is not None
    retention = stages.Retention(store)
    assert retention(now) == 6  # two slices of 3: the call's most
    assert retention(now) == 4  # 2 sent, 2 superseded
    assert retention(now) == 0
    log = SqlNotificationLog(store)
    assert log.count_by_status() == {"sent": 1, "dead": 1, "pending": 1, "superseded": 1}
    assert [n.id for n in log.notifications("sent", 10, None)[0]] == ["recent"]
    assert [n.id for n in log.notifications("superseded", 10, None)[0]] == ["superseded_2"]


def test_housekeeping_finds_quiet_alerts_and_old_sends_by_an_index_not_a_scan(tmp_path: Path) -> None:
    """Auto-resolve and retention run every 10 s in a write transaction the processor's commits
    wait for: each of their reads must search an index, whatever the tables hold."""
    store = SqliteStore(tmp_path / "store.db")
    conn = store.conn()
    ran: list[str] = []
    conn.set_trace_callback(ran.append)
    stages.AutoResolve(store, lambda: {"card_velocity": 3600.0})(10_000.0)
    stages.Retention(store)(100 * 86400.0)
    conn.set_trace_callback(None)
    reads = [sql for sql in ran if "FROM alerts" in sql or "FROM notifications" in sql]
    assert len(reads) == 3, ran
    plans = [row[-1] for sql in reads for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    assert all(step.startswith(("SEARCH", "LIST SUBQUERY")) for step in plans), plans  # no SCAN
    assert "SEARCH alerts USING INDEX alerts_quiet (rule_id=? AND status=?)" in plans
    assert "SEARCH notifications USING INDEX notifications_sent (status=? AND sent_at<?)" in plans
    assert "SEARCH notifications USING INDEX notifications_due (status=? AND next_attempt_at<?)" in plans  # superseded


def test_a_silence_is_checked_before_it_is_stored(store: SqlStore) -> None:
    silences = SqlSilenceStore(store)
    for matchers, comment, ends_at in (
        ([], "mutes nothing, not everything", 60.0),
        (["customer_id=c1"], " ", 60.0),
        (["customer_id=c1"], "too long", 400 * 86400.0),
        (["customer_id=~("], "a bad pattern", 60.0),
    ):
        with pytest.raises(SilenceError) as caught:
            silences.create_silence(matchers, 0.0, ends_at, "key:ana", comment, now=0.0)
        assert caught.value.status == 400
    assert silences.silences(100, None, 0.0) == ([], None)
    assert store.list_audit()[0] == []


def test_a_silence_is_audited_and_expires_once(store: SqlStore) -> None:
    silences = SqlSilenceStore(store)
    silence = silences.create_silence(["customer_id=c1"], 10.0, 70.0, "key:ana", "holiday", now=5.0)
    assert silence.to_dict(5.0)["state"] == "pending"
    assert silences.current_count(70.0) == 0
    expired = silences.expire_silence(silence.id, "key:ana", now=20.0)
    assert (expired.starts_at, expired.ends_at, expired.to_dict(20.0)["state"]) == (10.0, 20.0, "expired")
    with pytest.raises(NotFound):
        silences.expire_silence(silence.id, "key:ana", now=21.0)
    assert [a["action"] for a in store.list_audit()[0]] == ["silence.expire", "silence.create"]


def test_a_request_that_read_the_clock_first_but_writes_second_writes_after(store: SqlStore) -> None:
    """Requests read the clock before they wait for the write lock. A pen test's concurrent
    assignments left the alert with the last writer's assignee and its newest history entry
    another's; two expiries of one silence both succeeded (the second moving its end back,
    audited twice); the trail's times went back. A change happens no earlier than the trail's
    newest entry."""
    (aid,) = commit(store, signal(1))
    store.assign(aid, "later", "key:b", "", now=1002.0)  # read the clock second, wrote first
    alert = store.assign(aid, "earlier", "key:a", "", now=1001.0)
    assert (alert.assignee, alert.history[-1].reason) == ("earlier", "assigned to earlier")
    silences = SqlSilenceStore(store)
    silence = silences.create_silence(["customer_id=c1"], 1000.0, 5000.0, "key:ana", "holiday", now=1003.0)
    silences.expire_silence(silence.id, "key:b", now=1010.0)
    with pytest.raises(NotFound):
        silences.expire_silence(silence.id, "key:a", now=1009.0)
    assert silences.silences(10, None, 1010.0)[0][0].ends_at == 1010.0
    trail = [entry["at"] for entry in reversed(store.list_audit()[0])]
    assert trail == sorted(trail)
    assert [a["action"] for a in store.list_audit()[0]][:1] == ["silence.expire"]


def test_an_entry_from_a_clock_far_ahead_dates_no_change_after_it(store: SqlStore) -> None:
    """Another host's entry 10 minutes ahead (a sign-in on a server whose clock runs ahead):
    followed, it dated every change after it, and a silence expired now muted on for 10 minutes."""
    with store.transaction() as conn:
        store.audit(conn, 1600.0, "key:other", "key.create", "k1", {})
    silences = SqlSilenceStore(store)
    silence = silences.create_silence(["customer_id=c1"], 1000.0, 5000.0, "key:ana", "holiday", now=1003.0)
    assert silences.expire_silence(silence.id, "key:ana", now=1010.0).ends_at == 1010.0
    (aid,) = commit(store, signal(1))
    # moved on 10 s at most (a request that waited for the lock), then its own clock again
    assert store.assign(aid, "ana", "key:ana", "", now=1030.0).updated_at == iso(1030.0)
    assert [e["at"] for e in store.list_audit()[0]] == [iso(t) for t in (1030.0, 1013.0, 1013.0, 1600.0)]


def test_current_silences_read_again_are_not_compiled_again(store: SqlStore) -> None:
    """A re-test: 1,000 silences of 20 distinct regexes outgrew the compiled patterns' cache, so
    every batch of alerts compiled them all again (0.9 s of CPU a batch)."""
    from ringfence.alerts.matchers import compile_pattern, stored_matchers

    silences = SqlSilenceStore(store)
    for i in range(30):
        matchers = [f'customer_id=~"z{i}x{k}[a-z0-9_]{{1,20}}"' for k in range(20)]
        silences.create_silence(matchers, 0.0, 3600.0, "key:ana", "maintenance", now=0.0)
    compile_pattern.cache_clear()  # as once 1,024 other patterns have passed through it
    stored_matchers.cache_clear()
    first = current_silences(store.conn(), 1.0)
    compiled = compile_pattern.cache_info().misses
    compile_pattern.cache_clear()
    again = current_silences(store.conn(), 2.0)
    assert (compiled, compile_pattern.cache_info().misses) == (600, 0)
    assert [m.regex for s in first for m in s.matchers] == [m.regex for s in again for m in s.matchers]


def test_the_current_silences_are_counted_where_one_is_added(store: SqlStore) -> None:
    """Counted before the transaction only, 60 requests at 985 made 1,006 (a pen test)."""
    silences = SqlSilenceStore(store)
    for i in range(MAX_CURRENT_SILENCES):
        silences.create_silence([f"customer_id=c{i}"], 0.0, 3600.0, "key:ana", "maintenance", now=0.0)
    with pytest.raises(TooManySilences) as refused:
        silences.create_silence(["customer_id=c"], 0.0, 3600.0, "key:ana", "one more", now=0.0)
    assert refused.value.status == 409
    assert silences.current_count(0.0) == MAX_CURRENT_SILENCES


def test_a_failed_batch_commits_neither_alerts_nor_offset(store: SqlStore) -> None:
    unbindable = Checkpoint("p", 7, state_changes=[object()], state_rows=1)  # type: ignore[list-item]
    store.commit_batch([signal(1)], Checkpoint("p", 5), now=1.0)
    with pytest.raises(Exception, match=r"type 'object'"):  # the driver's error: sqlite3 or psycopg
        store.commit_batch([signal(2, key="other")], unbindable, now=2.0)
    assert store.load_checkpoint("p")[0] == 5
    assert store.count_alerts() == 1


def test_checkpoint_state_and_watermarks_round_trip(store: SqlStore) -> None:
    first = pack_rows([("f", "k1", b"x"), ("f", "k2", b"y")])
    store.commit_batch([], Checkpoint("p", 9, [first], {0: 55.0}, state_rows=2), now=1.0)
    store.commit_batch([], Checkpoint("p", 10, [pack_rows([("f", "k1", None)])], {1: 66.0}, state_rows=1), now=2.0)
    assert store.load_checkpoint("p") == (10, {0: 55.0, 1: 66.0})
    engine = DictState()
    assert store.restore_state(engine) == 3
    assert engine.rows == {("f", "k2"): b"y"}
    # a whole snapshot (as after a reload) restores the same, with the changelog retired
    store.snapshot_all(engine)
    engine = DictState()
    assert store.restore_state(engine) == 1
    assert engine.rows == {("f", "k2"): b"y"}


def test_reopening_an_existing_store_keeps_its_data(tmp_path: Path) -> None:
    commit(SqliteStore(tmp_path / "s.db"), signal(1))
    assert SqliteStore(tmp_path / "s.db").count_alerts() == 1


def test_late_events_ingested_before_a_time_are_forgotten_a_slice_at_a_time(store: SqlStore) -> None:
    """The kafka runtime's retention: its offsets (partition x 2^40 + offset) do not follow
    ingestion, so the time alone decides."""
    late = [
        LateEvent((p << 40) + o, f"e{p}-{o}", "web", "login.failed", "c1", 1.0, 2.0, ingested_at=100.0 * o + p)
        for p in (0, 3)
        for o in range(1, 6)
    ]
    store.commit_batch([], Checkpoint("dispatch", 1, late_events=late), now=1.0)
    assert store.forget_late_events(ingested_before=301.0, limit=2) == 2
    assert store.forget_late_events(ingested_before=301.0, limit=10) == 3  # 100, 103, 200, 203, 300 in all
    assert sorted(e.ingested_at for e in store.list_late_events(limit=100)[0]) == [303.0, 400.0, 403.0, 500.0, 503.0]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_file_deleted_or_replaced_under_the_server_takes_no_commit(tmp_path: Path, how: str) -> None:
    """Its open connections would commit into the unlinked file: the processor would move past
    events whose alerts are then lost with it."""
    store = SqliteStore(tmp_path / "store.db")
    store.commit_batch([signal(1)], Checkpoint("embedded", 1), 1000.0)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"store.db{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        sqlite3.connect(tmp_path / "store.db").close()
    with pytest.raises(StoreError, match=r"store\.db was deleted or replaced under the server"):
        store.commit_batch([signal(2)], Checkpoint("embedded", 2), 1001.0)


def test_a_store_file_gone_is_the_stores_failure_not_an_events() -> None:
    """The processor retries it as it is; it never quarantines the events it holds."""
    assert is_store_failure(StoreUnavailable("store.db was deleted or replaced under the server"))


def test_the_notification_log_by_status_is_read_by_index_newest_first_without_a_sort(tmp_path: Path) -> None:
    """A re-test: a page of ``?status=sent`` read and sorted every sent notification (2 s at
    900,000, kept 30 days), and a key's 48 of them at once held other readers a minute."""
    store = SqliteStore(tmp_path / "s.db")
    try:
        plan = " ".join(
            str(row[-1])
            for row in store.conn().execute(
                "EXPLAIN QUERY PLAN SELECT rowid FROM notifications WHERE rowid < ? AND status = ? "
                "ORDER BY rowid DESC LIMIT ?",
                (10**9, "sent", 101),
            )
        )
    finally:
        store.close()
    assert "notifications_status" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
