"""A key every shard writes (an address stuffing credentials across customers) on the aws
runtime: shards run at once lose races on its state item and on its alert, and none of that
may lose an event, count a hit twice, or hold a shard up. An alert's hits in a batch go in
one write; hits that lose every race wait in their outbox, in order, while the shard goes on."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from ringfence.alerts.model import AlertQuery
from ringfence.errors import StoreError
from ringfence.runtimes.aws import alerts as alerts_module
from ringfence.runtimes.aws.alerts import AlertContention, AlertTable
from ringfence.runtimes.aws.state import Commit
from tests.helpers.aws import HOT_IP, DeploymentFactory, clean_run, with_hot_address, workload
from tests.helpers.store import signal

NOW = 1_700_000_000.0
ADDRESS_RULE = "credential_stuffing_ip"  # counts customers across shards: its hits follow their interleaving


@pytest.fixture(scope="module")
def hot_events() -> list[dict[str, Any]]:
    return with_hot_address(workload(700), 0.2, seed=7)


def test_shards_at_once_on_a_hot_address_lose_no_event_and_count_every_hit_once(
    deploy: DeploymentFactory, hot_events: list[dict[str, Any]]
) -> None:
    d = deploy(shards=4, batch_size=50)
    d.send(hot_events)
    committed: Counter[tuple[str, str]] = Counter()  # live hits of the commits that landed, by alert
    lock = threading.Lock()

    def landed(commit: Commit) -> None:
        with lock:
            committed.update((s.rule_id, s.dedup_key) for _, s in commit.outbox)

    d.drain_shards_at_once(landed)
    d.runtime.processor.tick()  # as every minute: finishes any hits that lost every race

    assert d.failures == []  # no batch given up on
    assert d.committed_all()
    counted = {(a.rule_id, a.dedup_key): a.count for a in d.runtime.alerts.list_alerts(AlertQuery(limit=500))[0]}
    assert counted == dict(committed)  # every hit committed is in its alert, once
    assert counted[(ADDRESS_RULE, HOT_IP)] >= 10
    for shard in d.stream.shard_ids():
        assert d.runtime.state.outbox(shard) == []


def test_hits_that_lose_every_race_wait_in_their_outbox_and_the_shard_goes_on(
    deploy: DeploymentFactory,
    hot_events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clean = clean_run(deploy, hot_events)
    d = deploy(batch_size=50)  # as the clean run: the shards' batches interleave the same way
    rt = d.runtime
    monkeypatch.setattr(alerts_module, "contention_pause_s", lambda retry, rng: 0.0)
    real_transact = rt.alerts.transact
    rt.alerts.transact = lambda items: False  # type: ignore[method-assign] # a racer always wins
    first, rest = hot_events[:400], hot_events[400:]
    d.send(first)
    d.stream.drain()

    assert not [r for r in caplog.records if "function error" in r.getMessage()]  # no batch failed
    assert d.failures == []
    assert d.committed_all()  # the events went on being processed
    assert d.alerts() == {}
    waiting = {shard: rt.state.outbox(shard) for shard in d.stream.shard_ids()}
    assert all(waiting.values())  # each shard's signals, in order

    rt.alerts.transact = real_transact  # type: ignore[method-assign]
    d.send(rest)
    d.stream.drain()  # each shard's next invocation applies them first

    assert d.failures == []
    assert all(rt.state.outbox(shard) == [] for shard in waiting)
    assert d.alerts() == clean.alerts()
    announced = {m["alert_id"] for m in d.queue_messages(d.alerts_queue_url)}
    assert announced == set(clean.alerts())


def test_an_alerts_hits_wait_together_and_the_others_are_applied(
    deploy: DeploymentFactory, hot_events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = deploy(shards=1, batch_size=100)
    clean.send(hot_events)
    clean.stream.drain()
    d = deploy(shards=1, batch_size=100)
    rt, shard = d.runtime, "shardId-000000000000"
    monkeypatch.setattr(alerts_module, "contention_pause_s", lambda retry, rng: 0.0)
    real_apply = rt.alerts.apply
    hot_alert_applied: list[list[str]] = []

    def the_address_loses(hits: Any, source: str, now: float) -> Any:  # a racer always wins its alert
        if hits[0][1].rule_id == ADDRESS_RULE:
            raise AlertContention("a racer won every attempt")
        return real_apply(hits, source, now)

    def records(hits: Any, source: str, now: float) -> Any:
        if hits[0][1].rule_id == ADDRESS_RULE:
            hot_alert_applied.append([ordinal for ordinal, _ in hits])
        return real_apply(hits, source, now)

    rt.alerts.apply = the_address_loses  # type: ignore[method-assign]
    d.send(hot_events[:400])
    d.stream.drain()

    alerts = {rule for rule, _ in d.alerts().values()}
    assert alerts  # the other alerts were applied
    assert ADDRESS_RULE not in alerts  # the address's hits wait, in their outboxes
    waiting = rt.state.outbox(shard)
    assert all(any(s.rule_id == ADDRESS_RULE for _, s in o.signals) for o in waiting)  # only theirs
    waiting_hits = {ordinal for o in waiting for ordinal, s in o.signals if s.rule_id == ADDRESS_RULE}
    assert waiting_hits

    rt.alerts.apply = records  # type: ignore[method-assign]
    d.send(hot_events[400:])
    d.stream.drain()  # the next invocation applies them with its own, in one write

    assert rt.state.outbox(shard) == []
    assert d.alerts() == clean.alerts()
    first = hot_alert_applied[0]  # the waiting hits, with the invocation's own, in one write
    assert set(first) > waiting_hits


def test_the_tick_applies_the_hits_left_waiting(
    deploy: DeploymentFactory, hot_events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = clean_run(deploy, hot_events)
    d = deploy(batch_size=50)
    rt = d.runtime
    monkeypatch.setattr(alerts_module, "contention_pause_s", lambda retry, rng: 0.0)
    real_transact = rt.alerts.transact
    rt.alerts.transact = lambda items: False  # type: ignore[method-assign]
    d.send(hot_events)
    d.stream.drain()
    assert d.alerts() == {}
    rt.alerts.transact = real_transact  # type: ignore[method-assign] # and no event comes after

    rt.processor.tick()

    assert d.alerts() == clean.alerts()
    assert all(rt.state.outbox(shard) == [] for shard in d.stream.shard_ids())


class _Cancelling:
    """A DynamoDB client whose transactions are all cancelled with ``reasons``."""

    def __init__(self, *reasons: str) -> None:
        self.reasons = reasons

    def transact_write_items(self, **_: Any) -> None:
        from botocore.exceptions import ClientError

        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                "CancellationReasons": [{"Code": reason} for reason in self.reasons],
            },
            "TransactWriteItems",
        )


@pytest.mark.parametrize("reason", ["ConditionalCheckFailed", "TransactionConflict", "ThrottlingError"])
def test_a_transaction_lost_to_a_race_or_throttled_is_tried_again(reason: str) -> None:
    assert AlertTable(_Cancelling("None", reason), "alerts").transact([{}, {}]) is False


def test_a_transaction_cancelled_for_another_reason_is_raised() -> None:
    with pytest.raises(StoreError, match="ValidationError"):
        AlertTable(_Cancelling("None", "ValidationError"), "alerts").transact([{}, {}])


def test_an_alerts_hits_in_one_write_equal_them_one_at_a_time(deploy: DeploymentFactory) -> None:
    table: AlertTable = deploy(shards=1).runtime.alerts
    # later hits happened earlier: the first and last seen are not the first and last hits'
    hits = [(f"{i:08d}", signal(i, key="together", t=100.0 - 3 * i)) for i in range(1, 6)]

    together = table.apply(hits, "shard-a", NOW)
    for i in range(1, 6):
        table.apply([(f"{i:08d}", signal(i, key="apart", t=100.0 - 3 * i))], "shard-a", NOW)

    assert together is not None
    assert together.created
    assert together.owes_announcement
    a = table.get_item(together.alert_id)
    (b_id,) = [x.id for x in table.list_alerts(AlertQuery(limit=100))[0] if x.dedup_key == "apart"]
    b = table.get_item(b_id)
    fields = ("count", "first_seen", "last_seen", "title", "summary", "evidence")
    assert {f: a[f] for f in fields} == {f: b[f] for f in fields}
    assert a["count"]["N"] == "5"


def test_hits_of_an_alert_applied_already_are_not_counted_again(deploy: DeploymentFactory) -> None:
    table: AlertTable = deploy(shards=1).runtime.alerts
    hits = [(f"{i:08d}", signal(i)) for i in range(1, 5)]
    first = table.apply(hits[:2], "shard-a", NOW)  # an outbox applied part of the way before a crash
    assert first is not None
    table.mark_announced(first.alert_id, hits[1][0])

    again = table.apply(hits, "shard-a", NOW)  # the outbox again, whole
    assert again is not None
    assert not again.created
    assert table.get_item(first.alert_id)["count"]["N"] == "4"
    table.mark_announced(first.alert_id, hits[-1][0])
    assert table.apply(hits, "shard-a", NOW) is None  # all of it applied, and announced
    assert table.get_item(first.alert_id)["count"]["N"] == "4"
    # the same ordinals from another shard are other hits
    assert table.apply(hits[:1], "shard-b", NOW) is not None
    assert table.get_item(first.alert_id)["count"]["N"] == "5"
