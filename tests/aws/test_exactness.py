"""Exactness of the aws path under Lambda's failure modes, against the real local endpoint:
a batch failing part-way and retried, two invocations racing on the same keys, a poison
record. Each run's alerts and engine state must equal a run without the failure."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ringfence.engine.engine import Engine
from ringfence.engine.native import make_engine
from ringfence.events import validate_event
from ringfence.events.model import encode_event
from ringfence.runtimes.aws import handlers as handlers_module
from ringfence.runtimes.aws import processor as processor_module
from ringfence.runtimes.aws.handlers import process_event
from ringfence.runtimes.aws.items import TransactionRefused
from ringfence.runtimes.aws.processor import ShardProcessor, StreamRecord
from ringfence.runtimes.aws.state import Commit
from tests.helpers.aws import (
    HOT_IP,
    Deployment,
    DeploymentFactory,
    clean_run,
    first_commits_together,
    stream_record,
    with_hot_address,
    workload,
)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return workload()


def a_batch_and_a_zombie(
    deploy: DeploymentFactory, events: list[dict[str, Any]], batch_size: int
) -> tuple[Deployment, Deployment, str, list[StreamRecord], ShardProcessor]:
    """A clean run of ``events``; a one-shard deployment that took them, its shard, its first
    batch as Lambda hands it over, and a second container's processor to run it as a zombie."""
    clean = clean_run(deploy, events)
    d = deploy(shards=1, batch_size=batch_size)
    d.send(events)
    rt = d.runtime
    (shard,) = d.stream.shard_ids()
    batch = [stream_record(r) for r in d.stream.event_for(shard, d.stream.read(shard))["Records"]]
    zombie = ShardProcessor(rt.pack, rt.state, rt.alerts, rt.processor.announce, rt.processor.poison)
    return clean, d, shard, batch, zombie


class Crash(Exception):
    """The invocation dies here (a timeout, an out-of-memory kill)."""


def test_a_batch_failing_part_way_and_retried_neither_loses_nor_double_counts(
    deploy: DeploymentFactory, events: list[dict[str, Any]]
) -> None:
    clean = clean_run(deploy, events)
    flaky = deploy(batch_size=50)
    state, alerts, processor = flaky.runtime.state, flaky.runtime.alerts, flaky.runtime.processor
    real_commit, real_apply, real_announce = state.commit, alerts.apply, processor.announce
    calls = {"commit": 0, "apply": 0, "announce": 0}

    def commit(c: Commit, now: float) -> None:
        calls["commit"] += 1
        if calls["commit"] in (3, 9, 20, 33):
            raise Crash("before the transaction")  # nothing lands: the chunk is retried
        real_commit(c, now)
        if calls["commit"] in (5, 14, 27, 40):
            raise Crash("after the transaction")  # it landed: the retry must skip its events

    def apply(*args: Any) -> Any:
        calls["apply"] += 1
        if calls["apply"] in (2, 6, 11, 17):
            raise Crash("between two alerts of one outbox")
        return real_apply(*args)

    def announce(message: dict[str, Any]) -> None:
        calls["announce"] += 1
        if calls["announce"] in (1, 5, 9):
            raise Crash("before SNS took the announcement")
        real_announce(message)

    state.commit = commit  # type: ignore[method-assign]
    alerts.apply = apply  # type: ignore[method-assign]
    processor.announce = announce

    flaky.send(events)
    flaky.stream.drain()

    assert all(n > 20 for n in calls.values())  # every injected crash happened
    assert flaky.stream.invocations > clean.stream.invocations  # and was retried
    assert flaky.failures == []  # and no batch was given up on
    assert flaky.alerts() == clean.alerts()
    assert flaky.state_rows() == clean.state_rows()
    # every new alert was announced (SNS -> SQS) at least once; the dispatcher dedups repeats
    announced = {m["alert_id"] for m in flaky.queue_messages(flaky.alerts_queue_url)}
    assert announced == set(clean.alerts())


def test_sns_refusing_announcements_stops_no_shard_and_the_tick_sends_them_once_it_is_back(
    deploy: DeploymentFactory, events: list[dict[str, Any]]
) -> None:
    """An outage of SNS fails no invocation: Lambda would retry the batches, their events all
    committed, until it gave up on them. The alerts are made, their announcements owed."""
    d = deploy(shards=1, batch_size=50)
    rt = d.runtime
    real_announce, down = rt.processor.announce, [True]

    def announce(message: dict[str, Any]) -> None:
        if down[0]:
            raise Crash("SNS is unavailable")
        real_announce(message)

    rt.processor.announce = announce
    outcomes = d.outcomes()
    d.send(events[:300])
    d.stream.drain()
    assert d.failures == []
    assert d.stream.invocations == len(outcomes)  # none failed, none retried
    assert d.committed_all()
    assert sum(o.alerts_waiting for o in outcomes) > 0
    assert d.alerts()
    assert d.queue_messages(d.alerts_queue_url) == []

    down[0] = False
    rt.processor.tick()
    announced = [m["alert_id"] for m in d.queue_messages(d.alerts_queue_url) if m["change"] == "firing"]
    assert sorted(announced) == sorted(d.alerts())  # each once
    rt.processor.tick()
    assert d.queue_messages(d.alerts_queue_url) == []  # (those read are hidden) nothing announced again


@pytest.mark.serial  # the batch's processing must leave some of the invocation's time
def test_a_slow_sns_does_not_time_the_invocation_out_its_announcements_wait_for_the_tick(
    deploy: DeploymentFactory, events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SNS slow rather than down: the invocation announces only while a call can end before
    Lambda stops it, and returns with its batch committed; the rest wait (AlertsWaiting) and
    the tick announces each once. Without the deadline, a publish that takes its timeouts
    after the commits timed the invocation out, and Lambda ran the whole batch again."""
    d = deploy(shards=1, batch_size=300)
    rt = d.runtime
    real_announce, slow = rt.processor.announce, [True]
    publishes_began: list[float] = []

    def announce(message: dict[str, Any]) -> None:
        if slow[0]:  # the first publish takes the invocation past its deadline, on any host
            publishes_began.append(time.monotonic())
            time.sleep(max(0.0, deadlines[0] - time.monotonic()) + 0.2)
        real_announce(message)

    rt.processor.announce = announce
    monkeypatch.setattr(processor_module, "QUICK_CALL_MAX_S", 0.0)  # the margin: a publish of this test's
    d.send(events[:300])
    (shard,) = d.stream.shard_ids()
    batch = d.stream.event_for(shard, d.stream.read(shard))

    class Context:  # Lambda's: this many milliseconds left once the handler starts
        def get_remaining_time_in_millis(self) -> int:
            return 5000  # the batch's processing takes 1.5 to 1.8 s of it here

    deadlines: list[float] = []
    real_deadline_of = handlers_module.deadline_of

    def deadline_of(context: Any) -> float | None:  # the invocation's own, as the handler takes it
        deadline = real_deadline_of(context)
        deadlines.extend([deadline] if deadline is not None else [])
        return deadline

    monkeypatch.setattr(handlers_module, "deadline_of", deadline_of)
    assert process_event(rt, batch, Context()) == {"batchItemFailures": []}
    # none began past the deadline, so one at most ran past it (they run one after another); a
    # host's speed moves when they begin, not this
    (deadline,) = deadlines
    assert len(publishes_began) == 1  # the next would have begun past it
    assert all(began < deadline for began in publishes_began), [deadline - b for b in publishes_began]
    assert d.committed_all()
    applied = d.alerts()  # an alert is made when its hits are applied, and announced then
    firing = [m["alert_id"] for m in d.queue_messages(d.alerts_queue_url) if m["change"] == "firing"]
    assert sorted(firing) == sorted(applied)

    slow[0] = False
    rt.processor.tick()
    made = d.alerts()
    assert len(made) > len(applied)  # the rest waited in their outboxes for the tick
    firing += [m["alert_id"] for m in d.queue_messages(d.alerts_queue_url) if m["change"] == "firing"]
    assert sorted(firing) == sorted(made)  # each once


def test_two_invocations_racing_on_the_same_keys_cannot_both_commit(
    deploy: DeploymentFactory, events: list[dict[str, Any]]
) -> None:
    clean = clean_run(deploy, events)
    raced = deploy(batch_size=50)
    raced.send(events)
    rt = raced.runtime
    shard = raced.stream.shard_ids()[0]
    records = raced.stream.read(shard)
    assert len(records) == 50
    # a zombie still working on the first half, and the retry of the whole batch
    zombie = ShardProcessor(rt.pack, rt.state, rt.alerts, rt.processor.announce, rt.processor.poison)
    together = first_commits_together()
    zombie.before_commit = together
    rt.processor.before_commit = together
    outcomes: dict[str, Any] = {}

    def run(name: str, processor: ShardProcessor, batch: list[dict[str, Any]]) -> None:
        event = raced.stream.event_for(shard, batch)
        outcomes[name] = processor.process(shard, [stream_record(r) for r in event["Records"]])

    threads = [
        threading.Thread(target=run, args=("zombie", zombie, records[:25])),
        threading.Thread(target=run, args=("retry", rt.processor, records)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    rt.processor.before_commit = zombie.before_commit = lambda commit: None

    assert outcomes["zombie"].failed_sequence is None
    assert outcomes["retry"].failed_sequence is None
    # the versioned write rejected one of the two first commits...
    assert outcomes["zombie"].conflicts + outcomes["retry"].conflicts >= 1
    # ...and each event was processed by exactly one of them
    assert outcomes["zombie"].processed + outcomes["retry"].processed == 50
    raced.stream.drain()  # the rest of the stream, and these 50 again: all skipped
    assert raced.alerts() == clean.alerts()
    assert raced.state_rows() == clean.state_rows()


def test_a_poison_record_goes_to_the_failure_destination_and_does_not_block_its_shard(
    deploy: DeploymentFactory, events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = deploy(shards=1, batch_size=50)
    rt = d.runtime
    before, after = events[:300], events[300:]
    d.send(before)
    kinesis = rt.clients.kinesis
    kinesis.put_record(StreamName=rt.names.stream, Data=b'{"event_id": "x", "type": ', PartitionKey="cus_0000001")
    kinesis.put_record(StreamName=rt.names.stream, Data=b'{"event_id": "y"}', PartitionKey="cus_0000001")
    # an event the engine fails on (a bug, say): it must not block the shard either
    doomed = after[0]["event_id"]

    def failing(real: Any) -> Any:
        def process(self: Engine, event: Any, *args: Any) -> Any:
            if event.event_id == doomed:
                raise ZeroDivisionError("a bug")
            return real(self, event, *args)

        return process

    for kind in {Engine, type(make_engine(rt.pack))}:  # the reference engine and the one the runtime runs
        monkeypatch.setattr(kind, "process", failing(kind.process))
    d.send(after)
    d.stream.drain()

    poison = d.queue_messages(rt.names.poison_queue_url)
    reasons = sorted(p["reason"].split(":")[0] for p in poison)
    assert reasons == ["not a valid event", "not a valid event", "the engine failed on this event"]
    assert base64.b64decode(poison[0]["data_base64"]) in (b'{"event_id": "x", "type": ', b'{"event_id": "y"}')
    assert all(p["sequence_number"] and p["shard"] for p in poison)
    assert d.failures == []
    # everything after the poison was processed: the last event is marked done
    assert d.committed_all()
    assert len(d.alerts()) > 0
    # a retry of the whole stream does not send the poison again: markers and poison handled
    (shard,) = d.stream.shard_ids()
    assert process_event(rt, d.stream.event_for(shard, d.stream.read(shard))) == {"batchItemFailures": []}


@pytest.mark.parametrize("last", ["the same event again", "no event"])
def test_a_batch_ending_in_records_no_event_runs_is_passed_whole(
    deploy: DeploymentFactory, events: list[dict[str, Any]], last: str
) -> None:
    """The shard's progress reaches a batch's last record whatever it is: a producer's retry
    in the same batch (ingest let it through: not processed yet) or a record that is no event."""
    d = deploy(shards=1, batch_size=100)
    d.send(events[:20])
    if last == "no event":
        rt = d.runtime
        rt.clients.kinesis.put_record(StreamName=rt.names.stream, Data=b"{", PartitionKey="cus_0000001")
    else:
        d.send(events[19:20])
    outcomes = d.outcomes()
    d.stream.drain()
    assert len(outcomes) == 1  # one batch of 21 records
    assert outcomes[0].processed == 20
    assert d.committed_all()


def test_the_tick_finishes_an_outbox_no_retry_will_come_back_for(
    deploy: DeploymentFactory, events: list[dict[str, Any]]
) -> None:
    d = deploy(shards=1, batch_size=100)
    rt = d.runtime
    d.send(events[:300])
    real_apply = rt.alerts.apply

    def dies(*args: Any) -> Any:
        raise Crash("the invocation timed out before applying its outboxes")

    rt.alerts.apply = dies  # type: ignore[method-assign]
    d.stream.max_retries = 0  # and Lambda gives up on the batch at once
    d.stream.drain()
    assert d.failures  # parked on the on-failure destination
    assert d.alerts() == {}  # the committed signals wait in the outbox
    rt.alerts.apply = real_apply  # type: ignore[method-assign]
    assert rt.processor.tick().alerts_created > 0
    assert d.alerts()
    assert rt.state.outbox("shardId-000000000000") == []


def test_a_zombie_applying_its_outboxes_late_loses_no_hit_of_an_alert_the_retry_applied(
    deploy: DeploymentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zombie commits the first chunks, with hits of an alert, and stalls before applying
    them; the retry, started before those commits, skips the chunks and applies its own later
    hits of that alert. The retry's apply must take the zombie's outboxes in too: the alert's
    pointer for the shard, past the later hits, would make the zombie's earlier ones look applied."""
    monkeypatch.setattr(processor_module, "MAX_TRANSACTION_ITEMS", 30)  # chunks of a few events
    hot = with_hot_address(workload(), 0.2, seed=7)
    clean, raced, shard, batch, zombie = a_batch_and_a_zombie(deploy, hot, 200)
    rt = raced.runtime
    hits_committed, stalled, resume = [0], threading.Event(), threading.Event()

    def zombie_commits(commit: Commit) -> None:
        if hits_committed[0] >= 2:  # it committed chunks with hits of the hot address's alert
            stalled.set()
            resume.wait(timeout=120)
        hits_committed[0] += sum(s.dedup_key == HOT_IP for _, s in commit.outbox)

    zombie.before_commit = zombie_commits
    outcomes: dict[str, Any] = {}
    late = threading.Thread(target=lambda: outcomes.update(zombie=zombie.process(shard, batch)))

    def retry_commits(commit: Commit) -> None:
        if not late.is_alive() and "zombie" not in outcomes:  # the retry has read the outboxes left
            late.start()
            assert stalled.wait(timeout=120)

    rt.processor.before_commit = retry_commits
    retry = rt.processor.process(shard, batch)
    rt.processor.before_commit = lambda commit: None
    resume.set()
    late.join(timeout=120)

    assert retry.conflicts > 0  # it lost the first chunks' commits to the zombie...
    assert retry.skipped > 0  # ...and skipped their events
    assert outcomes["zombie"].skipped > 0  # and the zombie found the retry's chunks committed
    assert retry.failed_sequence is None
    assert outcomes["zombie"].failed_sequence is None
    assert rt.state.outbox(shard) == []
    raced.stream.drain()  # the rest of the stream, and this batch again: skipped
    assert raced.alerts() == clean.alerts()  # every hit counted once
    assert raced.state_rows() == clean.state_rows()  # and every event


def test_a_zombie_that_lost_a_race_runs_none_of_the_retrys_later_chunks_again(
    deploy: DeploymentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry commits the whole batch while the zombie is about to commit its first chunk:
    the zombie loses that race, learns the shard's progress, and must skip every later chunk
    too (run again, their commits would move the progress back and count events twice where
    no recent event id catches them)."""
    monkeypatch.setattr(processor_module, "MAX_TRANSACTION_ITEMS", 30)  # chunks of a few events
    events = workload()
    clean, d, shard, batch, zombie = a_batch_and_a_zombie(deploy, events, 700)
    assert len(batch) == len(events)
    rt = d.runtime
    moves: list[tuple[str | None, str]] = []
    real_commit = rt.state.commit

    def commit(c: Commit, now: float) -> None:
        real_commit(c, now)
        if c.progress is not None:
            moves.append((c.progress.loaded, c.progress.last))

    rt.state.commit = commit  # type: ignore[method-assign]
    retried: list[Any] = []

    def the_retry_runs_first(c: Commit) -> None:
        if not retried:
            retried.append(rt.processor.process(shard, batch))

    zombie.before_commit = the_retry_runs_first
    outcome = zombie.process(shard, batch)

    assert retried[0].processed == len(events)
    assert outcome.processed == 0
    assert outcome.skipped == len(events)
    assert all(loaded is None or last > loaded for loaded, last in moves)  # the progress never moved back
    assert d.alerts() == clean.alerts()
    assert d.state_rows() == clean.state_rows()


def test_a_record_dynamodb_refuses_is_parked_and_the_good_records_beside_it_are_committed(
    deploy: DeploymentFactory, events: list[dict[str, Any]]
) -> None:
    """Found by a hostile test: a record whose customer id is longer than DynamoDB takes in a
    key (no ingest of this release writes one) failed every commit of its chunk as if DynamoDB
    were down, until Lambda gave the whole batch, good events included, to the failure queue."""
    d = deploy(shards=1, batch_size=50)
    rt = d.runtime
    d.send(events[:3])
    stored = msgspec.json.decode(encode_event(validate_event(json.dumps(events[3]).encode(), 2e9)))
    oversized = {**stored, "event_id": "oversized", "customer_id": "c" * 3000}  # as ingest would store it, but
    rt.clients.kinesis.put_record(StreamName=rt.names.stream, Data=msgspec.json.encode(oversized), PartitionKey="c")
    d.send(events[4:10])
    d.stream.drain()
    poison = d.queue_messages(rt.names.poison_queue_url)
    assert len(poison) == 1
    assert b"oversized" in base64.b64decode(poison[0]["data_base64"])
    assert "ValidationException" in poison[0]["reason"]
    assert d.failures == []
    assert d.committed_all()


def test_only_a_records_size_refusal_parks_it_not_a_deployments_refusal() -> None:
    """On a review: a ValidationException a deployment causes (a table of another key schema)
    would park every record of the stream; it stays a failure retried as it is."""
    from botocore.exceptions import ClientError

    from ringfence.runtimes.aws.processor import _oversized

    def refused(message: str) -> ClientError:
        return ClientError({"Error": {"Code": "ValidationException", "Message": message}}, "TransactWriteItems")

    assert _oversized(refused("One or more parameter values were invalid: Size of hashkey has exceeded the maximum"))
    assert _oversized(refused("Item size has exceeded the maximum allowed size"))
    assert not _oversized(refused("The provided key element does not match the schema"))
    assert not _oversized(ValueError("Size"))


NOTE_PACK = """
version: "1"
types: [acme.note]
rules:
  - id: acme_note
    on: [acme.note]
    when: data.a > 10
    severity: high
    audience: fraud
    title: "note {customer_id}"
    dedup: "{data.tag}"
"""


def a_note(i: int, customer: str, tag: str, at: float) -> dict[str, Any]:
    return {
        "event_id": f"note-{i}",
        "type": "acme.note",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "customer_id": customer,
        "source": "acme",
        "data": {"a": 11, "tag": tag},
    }


def test_an_alert_whose_dedup_key_outgrows_a_partition_key_is_raised_and_holds_up_no_other(
    deploy: DeploymentFactory, tmp_path: Path
) -> None:
    """A producer's text renders a dedup key of up to 1,000 characters, 4,000 bytes; DynamoDB
    takes 2,048 in a partition key. The dedup pointer keyed by it as it is was refused on every
    try, and every alert of the shard behind it waited for ever."""
    pack = tmp_path / "pack.yaml"
    pack.write_text(NOTE_PACK)
    d = deploy(shards=1, batch_size=10, rule_pack=pack)
    d.stream.max_retries = 2
    now = time.time() - 60
    long_tag = "\U0001f600" * 600  # 2,400 bytes of UTF-8
    d.send([a_note(1, "cus_a", long_tag, now), a_note(2, "cus_b", long_tag, now + 1)])
    d.send([a_note(3 + i, f"cus_{i}", f"tag{i}", now + 2 + i) for i in range(5)])
    d.stream.drain()
    assert d.failures == []
    assert sorted(count for _, count in d.alerts().values()) == [1, 1, 1, 1, 1, 2]  # the long key's twice, deduplicated
    assert d.runtime.state.outbox("shardId-000000000000") == []
    d.runtime.processor.tick()


def test_an_alert_dynamodb_refuses_waits_in_its_outbox_and_the_others_are_raised(
    deploy: DeploymentFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(NOTE_PACK)
    d = deploy(shards=1, batch_size=10, rule_pack=pack)
    rt = d.runtime
    real = rt.alerts._apply

    def refuses(hits: Any, source: str, now: float) -> Any:
        if hits[0][1].dedup_key == "refused":  # as DynamoDB refuses an item over its size
            raise TransactionRefused("DynamoDB cancelled the transaction: ['ValidationError']")
        return real(hits, source, now)

    monkeypatch.setattr(rt.alerts, "_apply", refuses)
    now = time.time() - 60
    d.send([a_note(1, "cus_a", "refused", now), *(a_note(2 + i, f"cus_{i}", f"tag{i}", now + 1 + i) for i in range(3))])
    d.stream.drain()
    assert d.failures == []
    assert len(d.alerts()) == 3  # the others, raised
    outcome = rt.processor.tick()
    assert outcome.alerts_waiting == 1  # counted where the AlertsWaiting alarm sees it
    assert len(d.alerts()) == 3
    monkeypatch.setattr(rt.alerts, "_apply", real)  # a release that can store it
    rt.processor.tick()
    assert len(d.alerts()) == 4  # its hits were kept, not lost
    assert rt.state.outbox("shardId-000000000000") == []


def heartbeat_login(sequence: int, n: int, at: float, source: str, customer: str) -> StreamRecord:
    event = {
        "event_id": f"hb-{n}",
        "type": "login.succeeded",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "source": source,
        "customer_id": customer,
        "data": {"device_id": "dev_1", "ip": "10.0.0.1"},
    }
    body = encode_event(validate_event(json.dumps(event).encode(), at + 1.0))
    return StreamRecord(str(sequence), customer, body, at + 1.0)


@pytest.mark.parametrize("dies", [False, True])
def test_a_heartbeat_another_shard_pushed_on_does_not_fire_before_the_push_is_written(
    deploy: DeploymentFactory, dies: bool
) -> None:
    """Shard B's event pushes a source's silence deadline on; the push is written to the
    heartbeat's row at the end of B's invocation (or by its retry, if it died first). Shard
    A, ahead in event time past the old deadline but not the new, must not fire it meanwhile:
    run in order, nothing fires."""
    a, b = "shardId-000000000000", "shardId-000000000001"
    d = deploy(shards=2)
    rt = d.runtime
    t0 = time.time() - 3600
    rt.processor.process(b, [heartbeat_login(100, 1, t0, "partner-x", "cus_1")])  # armed: t0 + 300
    real = rt.state.apply_push

    def shard_a() -> None:  # ahead in event time: watermark t0 + 345
        rt.processor.process(a, [heartbeat_login(100, 3, t0 + 350, "mobile-app", "cus_2")])

    def meanwhile(push: Any) -> bool:
        rt.state.apply_push = real  # type: ignore[method-assign]
        if dies:
            raise Crash("the invocation died after its commit and checkpoint, before its pushes")
        shard_a()  # B is still running: its pushes are written after
        return real(push)

    rt.state.apply_push = meanwhile  # type: ignore[method-assign]
    if dies:
        with pytest.raises(Crash):
            rt.processor.process(b, [heartbeat_login(200, 2, t0 + 200, "partner-x", "cus_1")])  # pushed: t0 + 500
        shard_a()
        rt.processor.process(b, [heartbeat_login(200, 2, t0 + 200, "partner-x", "cus_1")])  # B's retry
    else:
        rt.processor.process(b, [heartbeat_login(200, 2, t0 + 200, "partner-x", "cus_1")])
    assert [rule for rule, _ in d.alerts().values()] == []


def test_a_shards_first_invocation_dying_after_its_commit_leaves_an_outbox_the_tick_finds(
    deploy: DeploymentFactory, tmp_path: Path
) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(NOTE_PACK)
    d = deploy(shards=1, rule_pack=pack)
    rt = d.runtime
    (shard,) = d.stream.shard_ids()
    note = json.dumps(a_note(1, "cus_a", "t", time.time() - 60)).encode()
    body = encode_event(validate_event(note, time.time(), custom_types=["acme.note"]))

    def dies(*args: Any) -> None:
        raise Crash("the invocation died after its commit, before its checkpoint")

    rt.state.advance_checkpoint = dies  # type: ignore[method-assign]
    with pytest.raises(Crash):
        rt.processor.process(shard, [StreamRecord("100", "cus_a", body, time.time())])
    assert d.alerts() == {}  # committed, in the outbox
    assert rt.processor.tick().alerts_created == 1  # and no retry may come: the tick finds it
