"""A kafka process worker meeting events that fail, with its broker in memory: of a stage or
join record holding many events, the one that fails is quarantined alone (a re-drive of its
entry runs it again) and the others still count and alert; nothing a failed event did reaches
the changelog, snapshots included; and records go to the partition the Java clients'
partitioner gives their key, as every producer of the runtime computes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from ringfence.config import Settings
from ringfence.engine.pack import load_pack, load_pack_file
from ringfence.engine.stages import CUSTOMER, JOIN, plan_stages
from ringfence.errors import StoreError
from ringfence.events.decode import validate_event
from ringfence.events.model import encode_event
from ringfence.runtimes.kafka import join, records
from ringfence.runtimes.kafka.changelog import Replayed
from ringfence.runtimes.kafka.seen import event_key
from ringfence.runtimes.kafka.task import Task
from ringfence.runtimes.kafka.worker import ProcessWorker, StagesChanged
from ringfence.runtimes.processing import Batch
from ringfence.testing import event
from tests.helpers.quarantine import PACK


@dataclass
class Message:
    """A consumed record, as confluent_kafka hands it over."""

    topic_: str
    partition_: int
    offset_: int
    value_: bytes
    headers_: list[tuple[str, bytes]] | None = None
    arrived_ms: int = 1_700_000_000_000  # the record's timestamp: when ingest took its event

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def value(self) -> bytes:
        return self.value_

    def key(self) -> bytes | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, self.arrived_ms)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.headers_

    def error(self) -> None:
        return None


def contributions(event_id: str, customer: str) -> list[records.Contribution]:
    """What the customer and card stages send the join for a card authorization of 9,000."""
    e = event("card.authorization", at=1_700_000_000.0, customer_id=customer, event_id=event_id, source="cards")
    e["data"] |= {"amount": "9000.00", "currency": "EUR", "card_id": f"card-{customer}", "approved": True}
    validated = validate_event(msgspec.json.encode(e), 1_700_000_100.0)
    key = event_key("cards", event_id)
    stages = [CUSTOMER, "card_id"]
    return [
        records.Contribution(key, CUSTOMER, stages, {}, validated.occurred_at, encode_event(validated), 7, 1.0),
        records.Contribution(key, "card_id", stages, {}, validated.occurred_at),
    ]


def test_an_event_whose_rules_fail_in_the_join_is_quarantined_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    pack = load_pack_file(None)
    plan = plan_stages(pack)
    real = join.evaluate

    def faulty(plan: Any, stage: Any, engine: Any, partition: int, parts: Any) -> Any:
        if any("poison" in p.event_key for p in parts.values()):
            raise RuntimeError("injected join fault")
        return real(plan, stage, engine, partition, parts)

    monkeypatch.setattr(join, "evaluate", faulty)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python")
    worker = ProcessWorker(settings, pack, worker_id="unit")  # nothing here reaches the (absent) broker
    try:
        check_join_isolation(worker, plan, real, monkeypatch)
    finally:
        worker.consumer.close()


def check_join_isolation(worker: ProcessWorker, plan: Any, real: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = worker.topics.join
    task, _ = Task.restore(plan.rules, 2, Replayed(), 5.0, 600.0, 0.0, engine_kind="python", min_log_rows=1000)
    worker.tasks = {(JOIN, 2): task}
    parts = [*contributions("ok-1", "c1"), *contributions("poison", "c2"), *contributions("ok-2", "c3")]
    batch: Batch[Any] = Batch()

    worker.fold([Message(topic, 2, 41, records.encode(parts))], batch)

    assert {s.event_id for s in batch.signals} >= {"ok-1", "ok-2"}
    assert "poison" not in {s.event_id for s in batch.signals}
    (entry,) = batch.quarantined
    assert (entry.origin, entry.partition, entry.offset) == (topic, 2, 41 << 16 | 3)  # its last contribution
    assert (entry.source, entry.event_id, entry.stage) == ("cards", "poison", "join")
    assert entry.reason == "RuntimeError: injected join fault"
    # its entry is a join record of the event's contributions: re-driven, it is evaluated again
    assert [p.stage for p in records.decode_contributions(entry.body)] == [CUSTOMER, "card_id"]
    assert task.joins.pending == {}
    monkeypatch.setattr(join, "evaluate", real)
    again: Batch[Any] = Batch()
    worker.fold([Message(topic, 2, 42, entry.body)], again)
    assert {s.event_id for s in again.signals} == {"poison"}


def test_partitions_are_the_java_clients() -> None:
    # Kafka's own test vectors of Utils.murmur2 (signed there)
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    vectors |= {
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    }
    for data, signed in vectors.items():
        assert records.murmur2(data) == signed & 0xFFFFFFFF
    assert records.partition_for(b"21", 12) == (-973932308 & 0x7FFFFFFF) % 12


def card_authorization(event_id: str, customer: str = "c9", at: float = 1_700_000_000.0) -> Any:
    e = event("card.authorization", at=at, customer_id=customer, event_id=event_id, source="cards")
    e["data"] |= {"amount": "90.00", "currency": "EUR", "card_id": f"card-{customer}", "approved": True}
    return validate_event(msgspec.json.encode(e), max(at, 1_700_000_000.0) + 100)


class CustomerChangelog:
    """The customer stage's changelog partition of a worker whose broker is a list: its
    commits append their entries (``fail`` refuses one, if it says so), and a reset restores
    the stage's task on partition 0 of the events topic from them."""

    def __init__(
        self,
        worker: ProcessWorker,
        pack: Any,
        monkeypatch: pytest.MonkeyPatch,
        min_log_rows: int,
        fail: Callable[[], bool] = lambda: False,
    ) -> None:
        self.worker, self.pack, self.min_log_rows, self.fail = worker, pack, min_log_rows, fail
        self.topic, self.changelog = worker.topics.events, worker.topics.changelog
        self.log: list[bytes] = []
        monkeypatch.setattr(worker, "_restore", self.restore)  # the broker's part of a reset
        monkeypatch.setattr(worker.transactions, "offsets_past", lambda *args: [])
        monkeypatch.setattr(worker, "_fencing", lambda entries: [])
        monkeypatch.setattr(worker.transactions, "commit", self.commit)
        self.restore()

    def replayed(self) -> Any:
        from ringfence.runtimes.kafka.changelog import decode_entry, replay

        return replay([(i, decode_entry(v)) for i, v in enumerate(self.log)])

    def restore(self, _ids: Any = None) -> None:
        stage = self.worker.plan.stages[0]
        task, _ = Task.restore(
            stage, 0, self.replayed(), 5.0, 600.0, 0.0, engine_kind="python", min_log_rows=self.min_log_rows
        )
        self.worker.tasks = {(CUSTOMER, 0): task}

    def commit(self, outputs: list[Any], offsets: list[Any]) -> None:
        if self.fail():
            raise OverflowError("injected commit fault")
        for output in outputs:
            if output.topic == self.changelog:
                self.log.append(output.value)
                if output.delivered is not None:
                    output.delivered(len(self.log) - 1)

    def card_auths_lifetime(self) -> dict[str, float]:
        """The ``card_auths_lifetime`` feature of each customer, as the changelog holds it."""
        from ringfence.engine.features import decode_state

        spec = next(f for f in self.pack.features if f.name == "card_auths_lifetime")
        return {
            k: spec.value(decode_state(v), 4e9)
            for (n, k), v in self.replayed().state_rows().items()
            if n.startswith(f"{spec.name}#")
        }


def test_events_that_fail_in_a_stage_record_are_quarantined_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from ringfence.engine.engine import Engine, EventContext
    from ringfence.runtimes.kafka import task as task_module
    from ringfence.runtimes.processing import Driver

    pack = load_pack_file(None)
    plan = plan_stages(pack)
    real = task_module.run_stage

    def faulty(plan: Any, stage: Any, engine: Any, event: Any, *args: Any) -> Any:
        if event.event_id.startswith("poison"):
            raise RuntimeError("injected stage fault")
        return real(plan, stage, engine, event, *args)

    monkeypatch.setattr(task_module, "run_stage", faulty)
    taking = Task.take_changes

    def codec_fails(task: Task) -> None:  # as the state codec does on a value it cannot encode
        if any(key.endswith("codec-4") for key, _ in task.seen.new):
            raise OverflowError("injected codec fault")
        taking(task)

    monkeypatch.setattr(Task, "take_changes", codec_fails)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python")
    worker = ProcessWorker(settings, pack, worker_id="unit")  # nothing here reaches the (absent) broker
    try:
        topic = worker.topics.stage_input("card_id")
        stage = plan.stage("card_id")

        def fresh(_ids: Any = None) -> None:  # the state of the last commit: none yet
            task, _ = Task.restore(stage, 1, Replayed(), 5.0, 600.0, 0.0, engine_kind="python", min_log_rows=1000)
            worker.tasks = {("card_id", 1): task}

        commits: list[tuple[Batch[Any], dict[int, list[records.Contribution]]]] = []

        def commit(batch: Batch[Any]) -> None:
            commits.append((batch, worker._joins))
            worker._joins = {}

        fresh()
        monkeypatch.setattr(worker, "_restore", fresh)  # the broker's part of a reset
        monkeypatch.setattr(worker, "commit", commit)
        events = [card_authorization(i) for i in ("ok-0", "poison-1", "ok-2", "poison-3", "codec-4", "ok-5")]
        joined = plan.route(events[0], EventContext(events[0], Engine(pack)))[1]
        assert "card_id" in joined  # the card stage sends the join its values
        items = [records.StageItem(encode_event(e), joined) for e in events]
        headers = [(records.ITEMS_HEADER, b"1"), (records.STAGE_HEADER, b"card_id")]
        message = Message(topic, 1, 41, records.encode(items), headers)

        Driver(worker, commit_each=True).run([message])

        (batch, joins), *_ = [c for c in commits if c[0].records]
        assert sorted((q.event_id, q.offset, q.stage) for q in batch.quarantined) == [
            ("codec-4", 41 << 16 | 4, "card_id"),
            ("poison-1", 41 << 16 | 1, "card_id"),
            ("poison-3", 41 << 16 | 3, "card_id"),
        ]
        assert {q.reason for q in batch.quarantined} == {
            "RuntimeError: injected stage fault",
            "OverflowError: injected codec fault",
        }
        # each as a record of its own, with its join and stage headers: a re-drive runs it again
        assert msgspec.msgpack.decode(batch.quarantined[0].record_headers or b"") == [
            [records.JOIN_HEADER, ",".join(joined).encode()],
            [records.STAGE_HEADER, b"card_id"],
        ]
        assert batch.quarantined[0].body == items[1].body
        assert [q.event_id for q in batch.quarantined] == ["poison-1", "poison-3", "codec-4"]
        sent = [p.event_key.split("\x1f")[1] for parts in joins.values() for p in parts]
        assert sent == ["ok-0", "ok-2", "ok-5"]
    finally:
        worker.consumer.close()


@pytest.mark.parametrize("fails_in", ["fold", "commit"])
def test_a_snapshot_written_with_a_poison_events_quarantine_holds_nothing_of_it(
    monkeypatch: pytest.MonkeyPatch, fails_in: str
) -> None:
    """The event fails as it is folded (the engine raised after changing the state), or its
    commit fails (a value the records' encoder refuses): either way its quarantine is committed
    with a snapshot part due, before the task is restored."""
    from ringfence.runtimes.kafka import task as task_module
    from ringfence.runtimes.processing import Driver

    pack = load_pack_file(None)
    real = task_module.run_stage

    failing_commits: list[int] = []

    def faulty(plan: Any, stage: Any, engine: Any, event: Any, *args: Any) -> Any:
        out = real(plan, stage, engine, event, *args)  # the engine's state changed...
        if event.event_id.startswith("poison"):
            if fails_in == "fold":
                raise RuntimeError("injected fault after the state changed")
            failing_commits.append(1)  # ...and the commit that follows will fail
        return out

    monkeypatch.setattr(task_module, "run_stage", faulty)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python", kafka_snapshot_rows=1)
    worker = ProcessWorker(settings, pack, worker_id="unit")  # nothing here reaches the (absent) broker
    try:
        log = CustomerChangelog(
            worker, pack, monkeypatch, 1, fail=lambda: bool(failing_commits and failing_commits.pop())
        )
        driver = Driver(worker, commit_each=True)
        for offset, event_id in enumerate(["ok-0", "poison-1", "ok-2"]):
            driver.run([Message(log.topic, 0, offset, encode_event(card_authorization(event_id)))])

        assert log.replayed().since > 0  # restored from a snapshot (one is due at every commit)
        assert log.card_auths_lifetime() == {"c9": 2}  # ok-0 and ok-2
        log.restore()
        assert not any("poison-1" in key for key in worker.tasks[(CUSTOMER, 0)].seen.ids)
    finally:
        worker.consumer.close()


def test_records_of_many_events_stay_under_the_brokers_limit() -> None:
    items = [records.StageItem(bytes(1_000), ["customer"]) for _ in range(2_500)]  # 2.5 MB of events
    values = records.encode_in_records(items, lambda item: len(item.body) + 16)
    assert len(values) == 3
    assert all(len(v) < 1_000_000 for v in values)
    assert [i for v in values for i in records.decode_items(v)] == items  # all of them, in order
    assert records.encode_in_records([], len) == []
    # a worker commits about 4 MiB of them at a time, and runs its timers when none came
    from ringfence.runtimes.kafka.worker import SLICE_BYTES, _slices

    messages = [Message("t", 0, i, v) for i, v in enumerate(values * 4)]  # 12 records of 0.5-1 MB
    slices = [[m.offset() for m in s] for s in _slices(messages)]
    assert [o for s in slices for o in s] == list(range(12))  # all of them, in order
    assert len(slices) > 1
    assert all(sum(len(values[o % 3]) for o in s) <= SLICE_BYTES for s in slices)
    assert all(sum(len(values[o % 3]) for o in [*s, s[-1] + 1]) > SLICE_BYTES for s in slices[:-1])  # full
    assert _slices([]) == [[]]


def test_a_batch_whose_changelog_entry_outgrows_a_record_is_committed_record_by_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch that changed more state than one changelog entry holds is no failure of the
    log, retried as it is for ever: it is run again a record at a time, each committed with an
    entry of its own, and every event counts once."""
    from ringfence.runtimes.kafka import worker as worker_module
    from ringfence.runtimes.processing import Driver

    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python")
    pack = load_pack_file(None)
    worker = ProcessWorker(settings, pack, worker_id="unit")  # nothing here reaches the (absent) broker
    try:
        log = CustomerChangelog(worker, pack, monkeypatch, 1000)
        committed: list[int] = []  # records each commit moved past
        real_commit = worker.commit

        def counting(batch: Batch[Any]) -> None:
            real_commit(batch)
            committed.append(len(batch.records))

        monkeypatch.setattr(worker, "commit", counting)
        customers = [f"c{i}" for i in range(12)]
        messages = [
            Message(log.topic, 0, offset, encode_event(card_authorization(f"e{offset}", customer)))
            for offset, customer in enumerate(customers)
        ]
        # a record that is no event, among them: skipped as rejected in the batch and in its rerun
        messages.insert(6, Message(log.topic, 0, 99, b"not an event"))
        Driver(worker, commit_each=True).run(messages[:1])  # an entry of one event's changes, under the limit set next
        monkeypatch.setattr(worker_module, "MAX_ENTRY_BYTES", 2 * len(log.log[-1]))

        Driver(worker, commit_each=True).run(messages[1:])

        assert committed == [1] * len(messages)  # the batch's commit refused, then a record at a time
        assert log.card_auths_lifetime() == dict.fromkeys(customers, 1)  # each event once
        samples = worker.metrics.registry
        assert samples.get_sample_value("ringfence_events_quarantined_total") == 0
        assert samples.get_sample_value("ringfence_events_processed_total") == len(customers)
        assert samples.get_sample_value("ringfence_events_rejected_total") == 1  # once, though folded twice
    finally:
        worker.consumer.close()


def test_every_keyed_stage_but_the_customers_reads_the_stages_topic_and_a_record_names_its_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One topic feeds every keyed stage but the customer's (an ingest transaction writes two
    topics' partitions, not one topic's per stage); a record of it is its header's stage's, and
    one that names no stage of the pack (or one reading another topic) is skipped as rejected,
    its offset committed with the others."""
    pack = load_pack_file(None)
    plan = plan_stages(pack)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python")
    worker = ProcessWorker(settings, pack, worker_id="unit")  # nothing here reaches the (absent) broker
    try:
        topics = worker.topics
        keyed = [name for name in plan.names if name != CUSTOMER]
        assert {topics.stage_input(name) for name in keyed} == {topics.stages}
        assert topics.stage_input(CUSTOMER) == topics.events
        assert set(topics.specs(plan)) >= {topics.events, topics.stages, topics.join}
        assert not any(".stage." in name for name in topics.specs(plan))
        assert topics.tasks_of(topics.stages, 3, plan) == [(name, 3) for name in keyed]
        assert topics.tasks_of(topics.events, 3, plan) == [(CUSTOMER, 3)]
        assert topics.tasks_of(topics.join, 3, plan) == [(JOIN, 3)]
        assert {topics.source(task) for task in topics.tasks_of(topics.stages, 3, plan)} == {(topics.stages, 3)}
        assert topics.kind(topics.stages) == "stage"

        worker._assigned(None, [_TopicPartition(topics.stages, 1), _TopicPartition(topics.join, 1)])
        assert worker.pending == {(name, 1) for name in keyed} | {(JOIN, 1)}
        for name in keyed:
            worker.tasks[(name, 1)], _ = Task.restore(
                plan.stage(name), 1, Replayed(), 5.0, 600.0, 0.0, engine_kind="python", min_log_rows=1000
            )
        worker.pending -= set(worker.tasks)

        items = records.encode([records.StageItem(encode_event(card_authorization("e-1")), [])])
        named = [
            Message(topics.stages, 1, offset, items, [(records.ITEMS_HEADER, b"1"), (records.STAGE_HEADER, stage)])
            for offset, stage in enumerate((b"card_id", b"no-such-stage", CUSTOMER.encode(), b"ip"), 10)
        ]
        unnamed = Message(topics.stages, 1, 14, items, [(records.ITEMS_HEADER, b"1")])
        batch: Batch[Any] = Batch()
        worker.fold([*named, unnamed], batch)

        assert batch.rejected == 3  # counted in ringfence_events_rejected once the batch commits
        assert batch.processed == 0  # copies: an event counts as processed in the customer stage alone
        assert len(batch.records) == 5  # the rejected too: the committed offset moves past them
        assert [k for k in worker.tasks[("card_id", 1)].seen.ids if "e-1" in k]
        assert [k for k in worker.tasks[("ip", 1)].seen.ids if "e-1" in k]
        assert not [k for k in worker.tasks[("device_id", 1)].seen.ids if "e-1" in k]

        worker._revoked(None, [_TopicPartition(topics.stages, 1)])
        assert not worker.tasks
        assert worker.pending == {(JOIN, 1)}
    finally:
        worker.consumer.close()


@dataclass
class _TopicPartition:
    topic: str
    partition: int


class StoredPacks:
    """A worker's view of the store: the pack activated there (``active``), and no lists."""

    def __init__(self, text: str | None) -> None:
        self.text = text

    def active(self) -> Any:
        from ringfence.store.packs import PackVersion

        if self.text is None:
            raise StoreError("the store is down")
        pack = load_pack(self.text)
        return PackVersion(2, pack.version, pack.digest, self.text, 1.0, "analyst")

    def lists(self) -> dict[str, frozenset[str]]:
        return {}


def test_a_record_of_a_stage_the_worker_does_not_run_ends_it_if_the_stores_pack_runs_other_stages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingest follows the store's pack within seconds, so the stages topic may hold a stage a
    worker does not run yet: the worker looks at the store at once and, if its pack runs other
    stages, ends (to be started again on it: its tasks differ) rather than commit past the
    record; else the record is the fold's to reject; a store it cannot read ends it too (it
    cannot tell). Every few seconds it looks anyway: a pack of the same stages is taken up."""
    import re

    from ringfence.engine.pack import default_pack_text

    default = default_pack_text()
    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python")
    stored = StoredPacks(default)
    worker = ProcessWorker(settings, load_pack(default), worker_id="unit")  # nothing here reaches the broker
    worker.packs = stored  # type: ignore[assignment]
    try:
        folded: list[list[Any]] = []
        monkeypatch.setattr(worker.driver, "cycle", lambda messages, *_: folded.append(list(messages)))
        for name in worker.plan.names[1:]:  # the stages topic's partition 1: every keyed stage's but the customer's
            worker.tasks[(name, 1)], _ = Task.restore(
                worker.plan.stage(name), 1, Replayed(), 5.0, 600.0, 0.0, engine_kind="python", min_log_rows=1000
            )
        item = records.encode([records.StageItem(encode_event(card_authorization("e-1")), [])])
        headers = [(records.ITEMS_HEADER, b"1"), (records.STAGE_HEADER, b"no-such-stage")]
        unknown = Message(worker.topics.stages, 1, 7, item, headers)

        worker._cycle([unknown])  # the store runs this worker's pack: the fold rejects it
        assert folded == [[unknown]]

        stored.text = PACK.format(version="acme-1", of="data.a")  # a pack of the customer stage alone
        with pytest.raises(StagesChanged, match="runs the stages customer and this worker customer, card_id"):
            worker._cycle([unknown])
        stored.text = None
        with pytest.raises(StoreError):
            worker._cycle([unknown])
        assert len(folded) == 1  # neither went on to the fold

        stored.text = re.sub(r"^version:.*$", 'version: "same-stages"', default, flags=re.M)
        worker._last_pack_check = 0.0
        worker._follow_store()
        assert worker.plan.pack.version == "same-stages"
        stored.text = PACK.format(version="acme-2", of="data.a")
        worker._last_pack_check = 0.0
        with pytest.raises(StagesChanged):
            worker._follow_store()
    finally:
        worker.consumer.close()


def test_a_worker_trims_a_changelog_partition_only_holding_all_its_tasks_and_never_past_a_pinned_entry() -> None:
    """A worker trims partition *p* to what its tasks of *p* need, if it holds them all, and
    never past the first entry of a stage it does not run that its last restore kept (the
    store's pack was another, which may run that stage)."""
    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python")
    worker = ProcessWorker(settings, load_pack_file(None), worker_id="unit")  # nothing here reaches the broker
    try:
        for at, name in enumerate([*worker.plan.names, JOIN]):
            stage = worker.plan.rules if name == JOIN else worker.plan.stage(name)
            worker.tasks[(name, 2)], _ = Task.restore(
                stage, 2, Replayed(), 5.0, 600.0, 0.0, engine_kind="python", min_log_rows=1000
            )
            worker.tasks[(name, 2)].log.keep_from = 10 + at
        assert worker._trim_point(2) == 10
        worker._pinned[2] = 4
        assert worker._trim_point(2) == 4
        del worker.tasks[(JOIN, 2)]  # another worker holds the join's task: it may need more
        assert worker._trim_point(2) is None
    finally:
        worker.consumer.close()


def test_a_retry_is_dropped_a_window_of_arrival_after_its_event_however_old_the_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer's backlog sends an event that happened an hour ago, then retries it a minute
    later (no 202 came): the retry is dropped, though the task forgot ids by event time before
    (the event's batch was an hour behind the watermark at the next expiry, 30 s on). Ids are
    kept ``kafka_dedup_window_s`` of arrival, and then forgotten: the memory stays bounded."""
    from ringfence.runtimes.processing import Driver

    settings = Settings(kafka_bootstrap="127.0.0.1:9", kafka_partitions=4, engine="python")
    pack = load_pack_file(None)
    worker = ProcessWorker(settings, pack, worker_id="unit")  # nothing here reaches the (absent) broker
    try:
        log = CustomerChangelog(worker, pack, monkeypatch, 1000)
        driver = Driver(worker, commit_each=True)
        happened, arrived = 1_700_000_000.0, 1_700_000_100.0
        offsets = iter(range(100))

        def send(event_id: str, at: float, after_s: float) -> None:
            """The event ``event_id`` of time ``at``, ingested ``after_s`` after the first."""
            value = encode_event(card_authorization(event_id, at=at))
            message = Message(log.topic, 0, next(offsets), value, arrived_ms=int((arrived + after_s) * 1000))
            driver.cycle([message], list(worker.tasks.values()), arrived + after_s)  # expiry: every 30 s

        send("fresh-1", happened, 0)
        send("backlog-1", happened - 3600, 5)
        send("fresh-2", happened + 35, 40)  # an expiry passes
        send("backlog-1", happened - 3600, 45)  # the producer's retry
        send("fresh-1", happened, 50)  # and one of a recent event

        assert log.card_auths_lifetime() == {"c9": 3}
        samples = worker.metrics.registry
        assert samples.get_sample_value("ringfence_events_duplicate_total") == 2
        assert samples.get_sample_value("ringfence_events_processed_total") == 3  # the retries not

        send("fresh-3", happened + 700, 700)  # 600 s of arrival on: the first ids are forgotten
        send("backlog-1", happened - 3600, 705)
        assert log.card_auths_lifetime() == {"c9": 5}
        assert "cards\x1fbacklog-1" in worker.tasks[(CUSTOMER, 0)].seen.ids  # only as its last arrival
        assert "cards\x1ffresh-1" not in worker.tasks[(CUSTOMER, 0)].seen.ids
    finally:
        worker.consumer.close()


def test_a_join_waits_for_an_old_events_stages_by_arrival_not_event_time() -> None:
    """A backfilled event, hours behind the watermark, whose card stage's values come before an
    expiry and its customer stage's after: its rules are evaluated, not given up on (the join
    gave up on events an hour behind in event time). One whose stage never comes is given up
    an hour of arrival on."""
    from ringfence.runtimes.kafka.join import HORIZON_S, PendingJoins

    joins = PendingJoins()
    stages = [CUSTOMER, "card_id"]
    arrived = 1_700_000_100.0
    old = 1_700_000_000.0 - 3 * 3600
    assert joins.add(records.Contribution("cards\x1fb-1", "card_id", stages, {}, old, ingested_at=arrived)) is None
    assert joins.expire(arrived + 60) == []  # newer events keep arriving: it waits
    done = joins.add(records.Contribution("cards\x1fb-1", CUSTOMER, stages, {}, old, ingested_at=arrived))
    assert done is not None
    assert set(done) == set(stages)

    assert joins.add(records.Contribution("cards\x1fb-2", "card_id", stages, {}, old, ingested_at=arrived)) is None
    assert joins.expire(arrived + HORIZON_S - 1) == []
    assert joins.expire(arrived + HORIZON_S + 1) == ["cards\x1fb-2"]
    assert not joins.pending


def test_a_join_task_gives_up_by_the_arrival_of_the_contributions_it_takes() -> None:
    from ringfence.runtimes.kafka.join import HORIZON_S

    plan = plan_stages(load_pack_file(None))
    task, _ = Task.restore(plan.rules, 1, Replayed(), 5.0, 600.0, 0.0, engine_kind="python", min_log_rows=1000)
    stages, arrived, old = [CUSTOMER, "card_id"], 1_700_000_100.0, 1_700_000_000.0 - 3 * 3600
    batch: Batch[Any] = Batch()
    task.join(plan, records.Contribution("cards\x1fb-1", "card_id", stages, {}, old, ingested_at=arrived), batch)
    task.expired(1e12)  # event time far on: not what a join waits by
    assert list(task.joins.pending) == ["cards\x1fb-1"]
    later = records.Contribution("cards\x1fb-2", "card_id", stages, {}, old, ingested_at=arrived + HORIZON_S + 1)
    task.join(plan, later, batch)
    task.expired(0.0)
    assert list(task.joins.pending) == ["cards\x1fb-2"]
