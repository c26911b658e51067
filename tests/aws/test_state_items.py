"""The state table's layout and what it costs: a key's states in one item, reads eventually
consistent until a commit finds them stale, and the request units an event costs, kept
under a budget so a regression fails here. Against the real local endpoint (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ringfence.engine.engine import Engine, persisted_names
from ringfence.engine.pack import load_pack_file
from ringfence.events.model import Event
from ringfence.runtimes.aws.capacity import UnitMeter
from ringfence.runtimes.aws.state import STATE_TTL_MARGIN_S, ItemWrite, LoadedRow, writes_of
from ringfence.simulate import Traffic
from tests.aws.test_exactness import clean_run, workload
from tests.helpers.aws import Deployment, DeploymentFactory
from tests.helpers.parity import yesterday_at


def _items(d: Deployment) -> Iterator[dict[str, Any]]:
    db, kwargs = d.runtime.clients.dynamodb, {"TableName": d.runtime.names.state_table}
    while True:
        reply = db.scan(**kwargs)
        yield from reply["Items"]
        if "LastEvaluatedKey" not in reply:
            return
        kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]


def _states(item: dict[str, Any]) -> dict[str, tuple[bytes, float | None, float | None]]:
    decoded: dict[str, tuple[bytes, float | None, float | None]] = msgspec.msgpack.decode(bytes(item["st"]["B"]))
    return decoded


def test_a_keys_states_share_one_item_and_only_heartbeats_keep_rows(deploy: DeploymentFactory) -> None:
    d = deploy()
    d.send(workload(300))
    d.stream.drain()
    items = list(_items(d))
    keyed = [i for i in items if i["pk"]["S"].startswith("k|")]
    rows = [i["pk"]["S"].split("|")[1] for i in items if i["pk"]["S"].startswith("s|")]
    assert rows
    assert set(rows) <= d.runtime.state.heartbeats
    assert len(keyed) > 60
    known = set(persisted_names(d.runtime.pack).values())
    held = [_states(i) for i in keyed]
    assert all(set(states) <= known for states in held)
    assert max(len(states) for states in held) >= 8  # a customer's many definitions, one item
    # the item's version, timer and expiry are its states': one timer (the earliest) in the index
    for item, states in zip(keyed, held, strict=True):
        armed = sorted((deadline, name) for name, (_, deadline, _) in states.items() if deadline is not None)
        if armed:
            assert (float(item["d"]["N"]), item["dn"]["S"]) == armed[0]
        else:
            assert "d" not in item
            assert "tp" not in item
        expiries = [expires_at for _, _, expires_at in states.values()]
        if None in expiries:
            assert "ttl" not in item  # a state kept for ever keeps its item
        else:
            assert int(item["ttl"]["N"]) == int(max(e for e in expiries if e is not None))


class _StaleReads:
    """A DynamoDB client whose eventually consistent reads of keys' items answer from an old
    copy of the table (as a replica behind the leader may): the newest commits are missing."""

    def __init__(self, db: Any, old: dict[str, dict[str, Any]]) -> None:
        self._db, self._old = db, old
        self.stale_answers = 0
        self.consistent_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = self._db.batch_get_item(RequestItems=RequestItems)
        for table, request in RequestItems.items():
            if request.get("ConsistentRead"):
                self.consistent_reads += 1
                continue
            found = {i["pk"]["S"]: i for i in reply.get("Responses", {}).get(table, [])}
            for key in request["Keys"]:
                pk = key["pk"]["S"]
                if pk.startswith("k|") and found.get(pk) != self._old.get(pk):
                    self.stale_answers += 1
                    if pk in self._old:
                        found[pk] = self._old[pk]
                    else:
                        found.pop(pk, None)
            reply.setdefault("Responses", {})[table] = list(found.values())
        return reply


def test_a_stale_read_fails_the_commit_and_the_chunk_runs_again_on_consistent_reads(
    deploy: DeploymentFactory,
) -> None:
    events = workload()
    clean = clean_run(deploy, events)
    stale = deploy(batch_size=50)
    stale.send(events[:350])
    stale.stream.drain()
    old = {i["pk"]["S"]: i for i in _items(stale) if i["pk"]["S"].startswith("k|")}
    state = stale.runtime.state
    reads = _StaleReads(state.db, old)
    state.db = reads
    stale.send(events[350:])
    stale.stream.drain()
    state.db = reads._db

    assert reads.stale_answers > 20
    assert reads.consistent_reads > 0
    assert stale.failures == []
    assert stale.alerts() == clean.alerts()
    assert stale.state_rows() == clean.state_rows()


def _events(count: int, seed: int) -> list[Event]:
    from ringfence.events.decode import decode_batch

    traffic = Traffic(seed=seed, customers=3, fraud_rate=0.0, source_prefix="items")
    raw = list(traffic.stream(start=yesterday_at(9), rate_per_s=1.0, count=count))
    return decode_batch(msgspec.json.encode(raw), ndjson=False, now=yesterday_at(23), max_events=count).events


def test_an_item_written_again_leaves_out_expired_states_and_those_of_removed_definitions() -> None:
    pack = load_pack_file(None)
    events = [e for e in _events(60, seed=3) if e.customer_id is not None]
    customer = max({e.customer_id for e in events}, key=lambda c: len({e.type for e in events if e.customer_id == c}))
    mine = [e for e in events if e.customer_id == customer]
    *earlier, last = mine

    def ran(*batch: Event, restored: dict[tuple[str, str], LoadedRow] | None = None) -> Engine:
        engine = Engine(pack)
        engine.restore(((n, k, row.state) for (n, k), row in (restored or {}).items()), {})
        for i, e in enumerate(batch):
            engine.process(e, i, 0, e.occurred_at)
        return engine

    now = 1_000.0
    held = {(n, k): LoadedRow(st, 3, expires_at=now + 10) for n, k, st in ran(*earlier).take_changes() if k == customer}
    changed = {n for n, k, _ in ran(last, restored=held).take_changes() if k == customer}
    kept = sorted(n for n, _ in held if n not in changed)
    assert changed
    assert len(kept) >= 2
    expired, alive = kept[0], kept[1:]
    loaded = {
        **held,
        (expired, customer): LoadedRow(held[(expired, customer)].state, 3, expires_at=now - 1),
        ("a_feature_removed#0123456789ab", customer): LoadedRow(b"\x90", 3, expires_at=None),
    }
    keys, _, _ = writes_of(ran(last, restored=loaded), loaded, now)

    (write,) = [w for w in keys if w.key == customer]
    assert isinstance(write, ItemWrite)
    assert write.loaded_version == 3
    assert set(write.states) == changed | set(alive)
    for name in alive:  # an unchanged state is kept as it was
        assert write.states[name] == (held[(name, customer)].state, None, now + 10)
    for name in changed:
        _, _, expires_at = write.states[name]
        assert expires_at is None or expires_at >= now + STATE_TTL_MARGIN_S


# What this input costs (7.0 write and 2.2 read units an event, measured when the budget was
# set), with a margin: the layout of a row a state cost 15 and 16.
WRITE_UNITS_BUDGET = 7.5
READ_UNITS_BUDGET = 2.5


def test_what_an_event_costs_in_request_units_stays_under_its_budget(deploy: DeploymentFactory) -> None:
    """A guard at today's figures (docs/deploy-aws.md, "Cost per million events"), not issue
    18's targets (1 write and 2 read units an event), which this layout does not meet yet."""
    traffic = Traffic(seed=11, customers=2000, fraud_rate=0.01, source_prefix="units")
    events = list(traffic.stream(start=yesterday_at(12), rate_per_s=50.0, count=1000))
    d = deploy(batch_size=100)
    d.send(events, batch=500)
    meter = UnitMeter()
    meter.attach(d.runtime.clients.dynamodb)
    d.stream.drain()
    meter.detach(d.runtime.clients.dynamodb)
    assert d.failures == []
    write_units, read_units = meter.write_units / len(events), meter.read_units / len(events)
    assert 1.0 < write_units <= WRITE_UNITS_BUDGET, write_units
    assert 0.5 < read_units <= READ_UNITS_BUDGET, read_units


def test_an_upgrade_moves_the_rows_of_the_old_layout_into_items_and_keeps_heartbeat_rows(
    deploy: DeploymentFactory, tmp_path: Path
) -> None:
    import subprocess
    import sys

    d = deploy(rule_pack=absence_pack(tmp_path))
    d.send(workload(200))
    d.send([event(1, "contact.changed", yesterday_at(21) + 5, "cus_0000001", CONTACT)])
    d.stream.drain()
    state, db, table = d.runtime.state, d.runtime.clients.dynamodb, d.runtime.names.state_table
    items = {i["pk"]["S"]: i for i in _items(d)}
    before = d.state_rows()
    heartbeat_rows = {pk for pk in items if pk.startswith("s|")}
    # the same state as a deployment of the old layout would hold it: a row a state
    for pk, item in items.items():
        if pk.startswith("k|"):
            db.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
            for name, (st, deadline, expires_at) in _states(item).items():
                row: dict[str, Any] = {"pk": {"S": f"s|{name}|{pk[2:]}"}, "sk": {"S": "-"}, "st": {"B": st}}
                row["v"] = {"N": "4"}
                if deadline is not None:
                    row.update(tp={"S": "timer"}, d={"N": repr(deadline)})
                if expires_at is not None:
                    row["ttl"] = {"N": str(int(expires_at))}
                db.put_item(TableName=table, Item=row)
    assert not any(pk.startswith("k|") for pk in (i["pk"]["S"] for i in _items(d)))

    script = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "migrate-state"
    done = subprocess.run([sys.executable, str(script), table], capture_output=True, text=True, check=True)
    assert int(done.stdout.removeprefix("moved ").split()[0]) > 100
    assert subprocess.run([sys.executable, str(script), table], capture_output=True, text=True).stdout.startswith(
        "moved 0 "
    )  # again: nothing left to move

    after = {i["pk"]["S"] for i in _items(d)}
    assert {pk for pk in after if pk.startswith("s|")} == heartbeat_rows
    assert d.state_rows() == before
    armed = {(i["dn"]["S"], pk[2:]) for pk, i in items.items() if pk.startswith("k|") and "dn" in i}
    assert armed
    assert armed <= {row for _, row in state.due_timers(1e12, 1000)}  # each key's earliest timer, indexed again


def absence_pack(folder: Path) -> Path:
    """The default pack and an absence keyed by customer, whose timers live in keys' items (the
    default pack's one absence is a heartbeat, with rows of its own)."""
    from ringfence.engine.pack import default_pack_text

    pack = folder / "pack.yaml"
    pack.write_text(default_pack_text() + ABSENCE)
    return pack


def event(n: int, type_: str, at: float, customer: str, data: dict[str, Any]) -> dict[str, Any]:
    occurred_at = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"event_id": f"abs-{n}", "type": type_, "occurred_at": occurred_at, "source": "mobile-app",
            "customer_id": customer, "data": data}  # fmt: skip


LOGIN = {"device_id": "dev_1", "ip": "10.0.0.1", "geo": {"lat": 59.3, "lon": 18.1, "country": "SE"}}
TRANSFER = {"amount": "40.00", "currency": "EUR", "payee_id": "pay_1", "payee_country": "SE"}
CONTACT = {"device_id": "dev_1", "channel": "app"}

ABSENCE = """
  - id: contact_change_unconfirmed
    kind: absence
    description: Contact details changed and no login from the customer within 10 minutes.
    by: customer_id
    within: 10m
    after: {name: change, on: [contact.changed]}
    expect: {on: [login.succeeded]}
    severity: medium
    audience: security
    title: "no login after contact change {change.event_id}"
"""


def test_an_absence_timer_in_a_keys_item_is_indexed_by_its_state_and_fires(
    deploy: DeploymentFactory, tmp_path: Path
) -> None:
    d = deploy(shards=1, rule_pack=absence_pack(tmp_path))
    t0 = yesterday_at(10)
    d.send([
        event(1, "login.succeeded", t0, "cus_a", LOGIN),
        event(2, "transfer.initiated", t0 + 5, "cus_a", TRANSFER),
        event(3, "contact.changed", t0 + 10, "cus_a", CONTACT),
        event(4, "contact.changed", t0 + 20, "cus_b", {**CONTACT, "device_id": "dev_2"}),
        event(5, "login.succeeded", t0 + 60, "cus_b", {**LOGIN, "device_id": "dev_2"}),  # cus_b confirms
    ])  # fmt: skip
    d.stream.drain()
    name = persisted_names(d.runtime.pack)["pattern:contact_change_unconfirmed"]
    (item,) = [i for i in _items(d) if i["pk"]["S"] == "k|cus_a"]
    states = _states(item)
    assert len(states) >= 5  # the customer's features and the pattern, one item
    assert (item["dn"]["S"], float(item["d"]["N"])) == (name, states[name][1])
    assert states[name][1] == pytest.approx(t0 + 10 + 600)
    assert not [i for i in _items(d) if i["pk"]["S"] == "k|cus_b" and "d" in i]  # its absence ended

    d.send([event(6, "transfer.initiated", t0 + 900, "cus_c", TRANSFER)])  # event time passes the deadline
    d.stream.drain()
    fired = [rule for rule, _ in d.alerts().values() if rule == "contact_change_unconfirmed"]
    assert fired == ["contact_change_unconfirmed"]  # cus_a's, once
    (item,) = [i for i in _items(d) if i["pk"]["S"] == "k|cus_a"]
    assert "d" not in item
    assert len(_states(item)) >= 4  # the other states stay
