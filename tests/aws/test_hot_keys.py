"""A key every shard writes (an address stuffing credentials across customers) on the aws
runtime: shards run at once lose races on its state item and on its alert, and none of that
may lose an event, count a hit twice, or hold a shard up. An alert's hits in a batch go in
one write; hits that lose every race wait in their outbox, in order, while the shard goes on."""

from __future__ import annotations

from typing import Any

import pytest

from ringfence.alerts.model import AlertQuery
from ringfence.runtimes.aws import alerts as alerts_module
from ringfence.runtimes.aws.alerts import AlertContention, AlertTable
from tests.helpers.aws import HOT_IP, DeploymentFactory, clean_run, with_hot_address, workload
from tests.helpers.store import signal

NOW = 1_700_000_000.0
ADDRESS_RULE = "credential_stuffing_ip"  # counts customers across shards: its hits follow their interleaving


@pytest.fixture(scope="module")
def hot_events() -> list[dict[str, Any]]:
    return with_hot_address(workload(700), 0.2, seed=7)


def processed_all(d: Any, events: list[dict[str, Any]]) -> bool:
    keys = {f"{e['source']}|{e['event_id']}" for e in events}
    return bool(d.runtime.state.processed(keys, consistent=True) == keys)


def test_shards_at_once_on_a_hot_address_lose_no_event_and_raise_the_same_alerts(
    deploy: DeploymentFactory, hot_events: list[dict[str, Any]]
) -> None:
    one_at_a_time = deploy(shards=4, batch_size=50)
    one_at_a_time.send(hot_events)
    one_at_a_time.stream.drain()
    at_once = deploy(shards=4, batch_size=50)
    at_once.send(hot_events)

    at_once.drain_shards_at_once()
    at_once.runtime.processor.tick()  # as every minute: finishes any hits that lost every race

    assert at_once.failures == []  # no batch given up on
    assert processed_all(at_once, hot_events)
    mine, theirs = at_once.alerts(), one_at_a_time.alerts()
    assert mine.keys() == theirs.keys()
    assert ADDRESS_RULE in {rule for rule, _ in mine.values()}
    assert {a: c for a, c in mine.items() if c[0] != ADDRESS_RULE} == {
        a: c for a, c in theirs.items() if c[0] != ADDRESS_RULE
    }
    hot = sum(1 for e in hot_events if e.get("data", {}).get("ip") == HOT_IP)
    assert sum(count for rule, count in mine.values() if rule == ADDRESS_RULE) <= hot  # no hit counted twice
    for shard in at_once.stream.shard_ids():
        assert at_once.runtime.state.outbox(shard) == []


def test_hits_that_lose_every_race_wait_in_their_outbox_and_the_shard_goes_on(
    deploy: DeploymentFactory,
    hot_events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clean = clean_run(deploy, hot_events)
    d = deploy(batch_size=50)  # as the clean run: the shards' batches interleave the same way
    rt = d.runtime
    monkeypatch.setattr(alerts_module, "contention_pause_s", lambda attempt, rng: 0.0)
    real_transact = rt.alerts.transact
    rt.alerts.transact = lambda items: False  # type: ignore[method-assign] # a racer always wins
    first, rest = hot_events[:400], hot_events[400:]
    d.send(first)
    d.stream.drain()

    assert not [r for r in caplog.records if "function error" in r.getMessage()]  # no batch failed
    assert d.failures == []
    assert processed_all(d, first)  # the events went on being processed
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


def test_a_shard_with_hits_waiting_applies_none_of_its_own_before_them(
    deploy: DeploymentFactory, hot_events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = deploy(shards=1, batch_size=100)
    clean.send(hot_events)
    clean.stream.drain()
    d = deploy(shards=1, batch_size=100)
    rt, shard = d.runtime, "shardId-000000000000"
    monkeypatch.setattr(alerts_module, "contention_pause_s", lambda attempt, rng: 0.0)
    real_transact, real_apply = rt.alerts.transact, rt.alerts.apply
    rt.alerts.transact = lambda items: False  # type: ignore[method-assign]
    d.send(hot_events[:100])
    d.stream.drain()
    waiting = len(rt.state.outbox(shard))
    assert waiting > 0
    rt.alerts.transact = real_transact  # type: ignore[method-assign]
    calls = 0

    def loses_the_first_race(*args: Any) -> Any:  # the next invocation's drain still loses
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AlertContention("a racer won every attempt")
        return real_apply(*args)

    rt.alerts.apply = loses_the_first_race  # type: ignore[method-assign]
    d.send(hot_events[100:200])
    d.stream.drain()

    assert calls == 1  # its own hits were not applied ahead of the ones waiting
    assert len(rt.state.outbox(shard)) > waiting
    assert d.alerts() == {}
    d.send(hot_events[200:])
    d.stream.drain()
    assert rt.state.outbox(shard) == []
    assert d.alerts() == clean.alerts()


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
