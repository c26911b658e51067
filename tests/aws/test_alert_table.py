"""The alerts table of the aws runtime as the alert pipeline's storage, against the real local
endpoint: silences refused before storage, transitions as on every runtime, inhibition that
honours ``equal`` across customers and without one, the notification log, and the audit
trail's hash chain (verified, tampering found, never forked by racing writers)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ringfence.alerts.config import InhibitRule
from ringfence.alerts.delivery import NextStep
from ringfence.alerts.matchers import parse_matchers
from ringfence.alerts.model import SHOWN_ENTRIES, Action, AlertQuery, NotificationStatus
from ringfence.alerts.muting import label_set, mute_reason
from ringfence.alerts.silences import SILENCE_KEPT_S, SilenceError
from ringfence.errors import Conflict, NotFound, RequestError
from ringfence.runtimes.aws.alerts import INHIBITION_SOURCES, AlertTable, pointer_pk
from ringfence.runtimes.aws.audit import AuditTrail
from tests.helpers.aws import AUDIT_KEY, DeploymentFactory
from tests.helpers.store import signal

NOW = time.time()
HOUR = 3600.0


@pytest.fixture
def table(deploy: DeploymentFactory) -> AlertTable:
    return deploy(shards=1).runtime.alerts


def raise_alert(table: AlertTable, n: int, **kw: Any) -> str:
    """A new alert of its own rule and dedup key; returns its id."""
    applied = table.apply([(f"{n:08d}", signal(n, key=f"k{n}", **kw))], "test", NOW)
    assert applied is not None
    assert applied.created
    return applied.alert_id


# -- silences ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matchers", "ends_at", "comment", "why"),
    [
        ([], NOW + HOUR, "maintenance", "at least one matcher"),
        (["customer_id=c1"], NOW + HOUR, "  ", "comment must say why"),
        ([f"l{i}=v" for i in range(21)], NOW + HOUR, "maintenance", "at most 20 matchers"),
        (["customer_id=c1"], NOW + 367 * 86400, "maintenance", "at most a year"),
        (["customer_id=~(unclosed"], NOW + HOUR, "maintenance", "invalid"),
        (["customer_id=c1"], NOW, "maintenance", "end after it starts"),
    ],
    # ids of their own: NOW in them made each xdist worker collect different test ids
    ids=["no-matcher", "blank-comment", "21-matchers", "over-a-year", "bad-regex", "ends-as-it-starts"],
)
def test_an_unacceptable_silence_is_refused_and_never_stored(
    table: AlertTable, matchers: list[str], ends_at: float, comment: str, why: str
) -> None:
    with pytest.raises(SilenceError, match=why):
        table.create_silence(matchers, NOW, ends_at, "analyst-1", comment, NOW)
    assert table.silences(100, None, NOW) == ([], None)
    assert table.audit.list_audit() == ([], None)


def test_a_silence_is_stored_audited_and_expired(table: AlertTable) -> None:
    silence = table.create_silence(["customer_id=c1"], NOW, NOW + HOUR, "analyst-1", "maintenance", NOW)
    assert silence.id.startswith("sil_")
    assert [s.id for s in table.current_silences(NOW + 60)] == [silence.id]
    expired = table.expire_silence(silence.id, "analyst-2", NOW + 60)
    assert (expired.starts_at, expired.ends_at) == (NOW, NOW + 60)
    assert table.current_silences(NOW + 61) == []
    assert [s.ends_at for s in table.silences(100, None, NOW + 61)[0]] == [NOW + 60]
    kept = table.get("silences", silence.id)
    assert kept is not None
    assert int(kept["ttl"]["N"]) == int(NOW + 60 + SILENCE_KEPT_S)
    with pytest.raises(NotFound):
        table.expire_silence(silence.id, "analyst-2", NOW + 120)
    with pytest.raises(NotFound):  # a request that read the clock before the expiry: once only
        table.expire_silence(silence.id, "analyst-3", NOW + 59)
    entries, _ = table.audit.list_audit()
    assert [(e["action"], e["actor"], e["target"]) for e in entries] == [
        ("silence.expire", "analyst-2", silence.id),
        ("silence.create", "analyst-1", silence.id),
    ]
    assert entries[1]["detail"]["matchers"] == ["customer_id=c1"]


def test_silences_stored_before_silences_were_listed_by_index_are_listed(table: AlertTable) -> None:
    ended = table.create_silence(["customer_id=c1"], NOW, NOW + 60, "analyst-1", "maintenance", NOW)
    table.expire_silence(ended.id, "analyst-1", NOW + 1)
    lasting = table.create_silence(["customer_id=c2"], NOW, NOW + HOUR, "analyst-1", "maintenance", NOW + 2)
    for silence in (ended, lasting):
        table.db.update_item(  # as an older release wrote them: no by_created attributes
            TableName=table.table,
            Key={"pk": {"S": "silences"}, "sk": {"S": silence.id}},
            UpdateExpression="REMOVE gp, gs",
        )
    assert [s.id for s in table.silences(100, None, NOW + 3)[0]] == [lasting.id, ended.id]
    assert [s.id for s in table.current_silences(NOW + 3)] == [lasting.id]  # the pipeline mutes with it


def test_an_alert_shows_its_newest_history_and_counts_the_rest(table: AlertTable) -> None:
    aid = raise_alert(table, 1)
    for i in range(SHOWN_ENTRIES + 20):
        assert table.transact([table.history_put(aid, "routed", f"step {i}", NOW + 1 + i)])
    alert = table.get_alert(aid)
    assert [h.reason for h in alert.history] == [f"step {i}" for i in range(20, SHOWN_ENTRIES + 20)]
    assert alert.history_omitted == 21  # its creation and the first 20 steps
    assert table.get_alert(raise_alert(table, 2)).history_omitted == 0


# -- applying hits ------------------------------------------------------------------------------------


def test_hits_applied_again_after_a_crash_owe_their_alert_its_announcement_whatever_came_after(
    table: AlertTable,
) -> None:
    """A shard applied hits that created an alert and died before announcing it; before its
    retry, a person resolved the alert and another shard opened the next occurrence. The
    retry's hits were applied, but the alert they made is still owed its announcement."""
    first = table.apply([("0001", signal(1))], "shard-a", NOW)
    assert first is not None
    assert first.created  # ... and the shard dies before SNS takes it
    table.transition(first.alert_id, Action.RESOLVE, "analyst-1", "seen to", NOW + 1)
    second = table.apply([("0001", signal(2))], "shard-b", NOW + 2)
    assert second is not None
    assert second.created
    assert second.alert_id != first.alert_id
    table.mark_announced(second.alert_id, "0001")

    again = table.apply([("0001", signal(1))], "shard-a", NOW + 3)  # the retry
    assert again is not None
    assert (again.alert_id, again.created, again.owes_announcement) == (first.alert_id, True, True)
    assert table.get_alert(first.alert_id).count == 1  # applied once
    table.mark_announced(first.alert_id, "0001")
    assert table.apply([("0001", signal(1))], "shard-a", NOW + 4) is None  # announced: nothing owed
    assert table.apply([("0001", signal(2))], "shard-b", NOW + 4) is None


def test_hits_applied_with_the_shards_next_ones_still_owe_their_alert_its_announcement(table: AlertTable) -> None:
    """A shard applied hits that created an alert and died before announcing it; before its
    retry, a person resolved the alert. The retry's outbox comes with the shard's next hits,
    which open the next occurrence: both alerts are owed their announcement."""
    first = table.apply([("0001", signal(1))], "shard-a", NOW)
    assert first is not None  # ... and the shard dies before SNS takes it, again and again
    table.transition(first.alert_id, Action.RESOLVE, "analyst-1", "seen to", NOW + 1)

    both = table.apply([("0001", signal(1)), ("0002", signal(2))], "shard-a", NOW + 2)
    assert both is not None
    assert (both.created, both.owes_announcement, both.last) == (True, True, "0002")
    assert both.alert_id != first.alert_id
    assert [(e.alert_id, e.owes_announcement, e.last) for e in both.earlier] == [(first.alert_id, True, "0001")]
    assert table.get_alert(first.alert_id).count == 1  # applied once
    assert table.get_alert(both.alert_id).count == 1
    # ... and the shard dies before announcing either: the pointer still knows the first is owed
    again = table.apply([("0001", signal(1)), ("0002", signal(2))], "shard-a", NOW + 3)
    assert again is not None
    assert (again.alert_id, again.owes_announcement, again.last) == (both.alert_id, True, "0002")
    assert [(e.alert_id, e.last) for e in again.earlier] == [(first.alert_id, "0001")]

    table.mark_announced(first.alert_id, "0001")
    table.mark_announced(both.alert_id, "0002")
    assert table.apply([("0001", signal(1)), ("0002", signal(2))], "shard-a", NOW + 4) is None
    later = table.apply([("0003", signal(3))], "shard-a", NOW + 5)
    assert later is not None
    assert later.earlier == ()  # the earlier hits' alert is this one, and the first was announced
    assert later.alert_id == both.alert_id
    pointer = table.get(pointer_pk("velocity", "tok_1"), "ptr")
    assert pointer is not None
    assert "owed|shard-a" not in pointer  # nothing owed is kept no longer
    assert table.apply([("0003", signal(3))], "shard-a", NOW + 6) is not None  # owed until announced


# -- transitions -------------------------------------------------------------------------------------


def test_an_invalid_transition_is_a_conflict_and_changes_nothing(table: AlertTable) -> None:
    aid = raise_alert(table, 1)
    assert table.transition(aid, Action.RESOLVE, "analyst-1", "false positive", NOW).status == "resolved"
    with pytest.raises(Conflict, match="cannot acknowledge an alert that is resolved"):
        table.transition(aid, Action.ACKNOWLEDGE, "analyst-1", "", NOW)
    alert = table.get_alert(aid)
    assert [(h.action, h.from_status, h.to_status) for h in alert.history] == [
        ("created", None, "open"),
        ("resolve", "open", "resolved"),
    ]
    assert [e["action"] for e in table.audit.list_audit()[0]] == ["alert.resolve"]


def test_acknowledging_twice_changes_it_once(table: AlertTable) -> None:
    aid = raise_alert(table, 1)
    for _ in range(2):
        assert table.transition(aid, Action.ACKNOWLEDGE, "analyst-1", "on it", NOW).status == "acknowledged"
    assert [e["action"] for e in table.audit.list_audit()[0]] == ["alert.acknowledge"]


def test_a_cursor_the_table_did_not_give_out_is_a_bad_request(table: AlertTable) -> None:
    for n in range(3):
        raise_alert(table, n)
    page, cursor = table.list_alerts(AlertQuery(limit=2))
    assert len(page) == 2
    assert cursor is not None
    rest, end = table.list_alerts(AlertQuery(limit=2, cursor=cursor))
    assert (len(rest), end) == (1, None)
    with pytest.raises(RequestError) as caught:
        table.list_alerts(AlertQuery(cursor="bm90IGEgY3Vyc29y"))
    assert (caught.value.status, caught.value.code) == (400, "invalid_cursor")


# -- inhibition --------------------------------------------------------------------------------------


def inhibited(table: AlertTable, rule: InhibitRule, target: str) -> str | None:
    alert = table.views([target])[0]
    return mute_reason([], [rule], label_set(alert), table.inhibition_sources, NOW)


def critical_inhibits_medium(*equal: str) -> InhibitRule:
    return InhibitRule(parse_matchers(["severity=critical"]), parse_matchers(["severity=medium"]), equal)


def test_inhibition_with_customer_equal_stays_within_the_customer(table: AlertTable) -> None:
    source = raise_alert(table, 1, severity="critical", customer_id="c1")
    same = raise_alert(table, 2, severity="medium", customer_id="c1")
    other = raise_alert(table, 3, severity="medium", customer_id="c2")
    rule = critical_inhibits_medium("customer_id")
    assert inhibited(table, rule, same) == f"inhibited by {source}"
    assert inhibited(table, rule, other) is None


def test_inhibition_without_customer_equal_crosses_customers(table: AlertTable) -> None:
    source = raise_alert(table, 1, severity="critical", customer_id="c1", labels={"region": "eu"})
    other = raise_alert(table, 2, severity="medium", customer_id="c2", labels={"region": "eu"})
    elsewhere = raise_alert(table, 3, severity="medium", customer_id="c3", labels={"region": "us"})
    assert inhibited(table, critical_inhibits_medium(), other) == f"inhibited by {source}"
    assert inhibited(table, critical_inhibits_medium("region"), other) == f"inhibited by {source}"
    assert inhibited(table, critical_inhibits_medium("region"), elsewhere) is None


def test_inhibition_of_alerts_without_customer(table: AlertTable) -> None:
    source = raise_alert(table, 1, severity="critical", customer_id=None)
    without = raise_alert(table, 2, severity="medium", customer_id=None)
    with_one = raise_alert(table, 3, severity="medium", customer_id="c1")
    rule = critical_inhibits_medium("customer_id")
    assert inhibited(table, rule, without) == f"inhibited by {source}"  # both have none: equal
    assert inhibited(table, rule, with_one) is None
    assert inhibited(table, critical_inhibits_medium(), with_one) == f"inhibited by {source}"


def test_only_firing_alerts_inhibit(table: AlertTable) -> None:
    source = raise_alert(table, 1, severity="critical")
    target = raise_alert(table, 2, severity="medium")
    rule = critical_inhibits_medium("customer_id")
    table.set_status(source, "open", "suppressed", "suppress", "silenced", NOW)
    assert inhibited(table, rule, target) is None
    table.set_status(source, "suppressed", "open", "unsuppress", "no longer", NOW)
    table.transition(source, Action.ACKNOWLEDGE, "analyst-1", "", NOW)
    assert inhibited(table, rule, target) == f"inhibited by {source}"
    table.transition(source, Action.RESOLVE, "analyst-1", "", NOW)
    assert inhibited(table, rule, target) is None


def test_inhibition_reads_a_bounded_page_of_just_what_label_sets_need(
    table: AlertTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = raise_alert(table, 1, severity="critical", customer_id="c1", labels={"region": "eu"})
    target = raise_alert(table, 2, severity="medium", customer_id="c2", labels={"region": "eu"})
    asked: list[dict[str, Any]] = []
    read: list[dict[str, Any]] = []
    query = table.db.query

    def recorded(**kwargs: Any) -> Any:
        reply = query(**kwargs)
        asked.append(kwargs)
        read.extend(reply["Items"])
        return reply

    monkeypatch.setattr(table.db, "query", recorded)
    assert inhibited(table, critical_inhibits_medium("region"), target) == f"inhibited by {source}"
    assert asked
    assert all(0 < q["Limit"] <= INHIBITION_SOURCES for q in asked)
    assert {name for item in read for name in item} == {
        "id",
        "rule_id",
        "severity",
        "audience",
        "customer_id",
        "labels",
    }


# -- the notification log ----------------------------------------------------------------------------


def owe(table: AlertTable, nid: str, at: float) -> None:
    payload = {"notification_id": nid, "alerts": [{"id": "al_1"}]}
    assert table.transact([table.notification_put(nid, "g_1", "hook", payload, at)])


def test_the_notification_log_pages_counts_and_redrives_dead_letters(table: AlertTable) -> None:
    for i in range(3):
        owe(table, f"n_{i}", NOW + i)
    dead = NextStep(NotificationStatus.DEAD, 3, NOW, "HTTP 500")
    sent = NextStep(NotificationStatus.SENT, 1, NOW, "")
    assert table.transact([table.attempt_update("n_0", dead, NOW), table.attempt_update("n_1", sent, NOW)])
    assert table.count_by_status() == {"dead": 1, "sent": 1, "pending": 1}
    first, cursor = table.notifications(None, 2, None)
    assert [n.id for n in first] == ["n_2", "n_1"]
    rest, end = table.notifications(None, 2, cursor)
    assert ([n.id for n in rest], end) == (["n_0"], None)
    assert [n.id for n in table.notifications("dead", 10, None)[0]] == ["n_0"]
    assert [n.id for n in table.due_notifications(NOW + 5, 10)] == ["n_2"]
    with pytest.raises(NotFound):
        table.redrive("n_1", "analyst-1", NOW)  # sent: not a dead letter
    again = table.redrive("n_0", "analyst-1", NOW + 10)
    assert (again.status, again.attempts, again.last_error) == ("pending", 0, "")
    assert {n.id for n in table.due_notifications(NOW + 10, 10)} == {"n_0", "n_2"}
    assert [e["action"] for e in table.audit.list_audit()[0]] == ["notification.redrive"]


# -- the audit trail ---------------------------------------------------------------------------------


def audited(table: AlertTable, n: int) -> None:
    for i in range(n):
        table.create_silence([f"customer_id=c{i}"], NOW, NOW + HOUR, "analyst-1", f"reason {i}", NOW + i)


def test_the_audit_chain_verifies_and_pages_newest_first(table: AlertTable) -> None:
    audited(table, 5)
    verdict = table.audit.verify()
    assert (verdict.ok, verdict.entries) == (True, 5)
    page, cursor = table.audit.list_audit(limit=3)
    assert [e["seq"] for e in page] == [5, 4, 3]
    rest, end = table.audit.list_audit(limit=3, cursor=cursor)
    assert ([e["seq"] for e in rest], end) == ([2, 1], None)


def test_tampering_with_the_audit_trail_is_found(table: AlertTable) -> None:
    audited(table, 4)
    db, name = table.db, table.table
    key = {"pk": {"S": "audit|0"}, "sk": {"S": f"{2:020d}"}}
    db.update_item(
        TableName=name,
        Key=key,
        UpdateExpression="SET actor = :a",
        ExpressionAttributeValues={":a": {"S": "someone-else"}},
    )
    db.delete_item(TableName=name, Key={"pk": {"S": "audit|0"}, "sk": {"S": f"{3:020d}"}})
    problems = table.audit.verify().problems
    assert any("entry 2 (silence.create" in p and "altered" in p for p in problems), problems
    assert "entries 3..3 were deleted" in problems


def test_the_newest_entries_cut_off_are_found(table: AlertTable) -> None:
    audited(table, 3)
    table.db.delete_item(TableName=table.table, Key={"pk": {"S": "audit|0"}, "sk": {"S": f"{3:020d}"}})
    assert table.audit.verify().problems == ["the newest entries after 2 were deleted (the head is entry 3)"]


def test_a_chain_made_with_another_key_does_not_verify(table: AlertTable) -> None:
    audited(table, 2)
    other = AuditTrail(table.db, table.table, AUDIT_KEY[::-1])
    assert len(other.verify().problems) == 2


def test_racing_writers_never_fork_the_chain(table: AlertTable) -> None:
    """Four writers race for the head while a reader reads it: the chain holds all 20
    entries, and every head read is a whole one (its seq and its hash)."""
    writers = [AlertTable(table.db, table.table, AUDIT_KEY) for _ in range(4)]
    barrier = threading.Barrier(len(writers) + 1)
    writing = threading.Event()
    heads: list[Any] = []
    failures: list[BaseException] = []

    def write(t: AlertTable) -> None:
        barrier.wait()
        try:
            audited(t, 5)
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    def read() -> None:
        barrier.wait()
        reader = AuditTrail(table.db, table.table, AUDIT_KEY)
        while writing.is_set():
            try:
                heads.append(reader.head())
            except BaseException as exc:  # reported by the assertion below
                failures.append(exc)

    writing.set()
    threads = [threading.Thread(target=write, args=(t,)) for t in writers]
    watcher = threading.Thread(target=read)
    for t in [*threads, watcher]:
        t.start()
    for t in threads:
        t.join(timeout=120)
    writing.clear()
    watcher.join(timeout=30)
    assert failures == []
    verdict = table.audit.verify()
    assert (verdict.ok, verdict.entries) == (True, 20), verdict.problems
    entries = {row[0]: row[-1] for row in table.audit._rows(0)}  # seq: hash
    torn = [h for h in heads if h is not None and entries.get(h.seq) != h.hash]
    assert any(h is not None for h in heads)
    assert torn == []


def test_silences_past_the_current_bound_are_refused(table: AlertTable, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound is the store's, on every runtime (here counted before the write)."""
    from ringfence.alerts.silences import TooManySilences
    from ringfence.runtimes.aws import silences as aws_silences

    monkeypatch.setattr(aws_silences, "MAX_CURRENT_SILENCES", 2)
    kept = [table.create_silence([f"customer_id=c{i}"], NOW, NOW + HOUR, "analyst-1", "why", NOW) for i in range(2)]
    with pytest.raises(TooManySilences):
        table.create_silence(["customer_id=c9"], NOW, NOW + HOUR, "analyst-1", "why", NOW)
    table.expire_silence(kept[0].id, "analyst-1", NOW + 1)
    assert table.create_silence(["customer_id=c9"], NOW, NOW + HOUR, "analyst-1", "why", NOW + 2).id
