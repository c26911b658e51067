"""A key's budget of changes is one budget for every API process and survives a restart: the
same bucket arithmetic on each backend (this process's memory, SQLite, PostgreSQL, DynamoDB),
two processes over one store charging one bucket, racing charges none of which is lost, and
end to end, a restarted embedded server and a second Lambda container refusing what the
first spent. (Each process held its own budget: N ``serve api`` processes or Lambda containers
gave a key N budgets, and each restart or new container a full one.)"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringfence.clock import Clock
from ringfence.errors import OverloadedError, RequestError
from ringfence.ratelimit import MAX_CLOCK_GAP_S, Buckets, TokenBuckets
from ringfence.testing import FixedClock
from tests.helpers.aws import REGION
from tests.helpers.http import silence_of_3_kib

MakeBuckets = Callable[[float, float, Clock], Buckets]  # (rate, burst, clock) -> buckets over one store


@dataclass
class SharedStore:
    make: MakeBuckets  # each one made is another API process's, over the one store
    kept: Callable[[], dict[str, tuple[float, float, float]]]  # what it holds: tokens, at, when forgotten
    forgets_by_itself: bool  # DynamoDB's TTL deletes; the SQL stores' writes sweep


@pytest.fixture(params=["memory", "sqlite", "postgres", "dynamodb"])
def make_buckets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBuckets]:
    """Makes buckets of one kind; on a store, each one made shares it (as two API processes do)."""
    if request.param == "memory":
        yield lambda rate, burst, clock: TokenBuckets(rate, burst, clock)
    else:
        for shared in _stored(request, tmp_path):
            yield shared.make


@pytest.fixture(params=["sqlite", "postgres", "dynamodb"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedStore]:
    yield from _stored(request, tmp_path)


def _stored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedStore]:
    if request.param == "dynamodb":
        from ringfence.runtimes.aws.budgets import DynamoBuckets
        from ringfence.runtimes.aws.items import TableItems
        from ringfence.runtimes.aws.resources import AwsClients

        request.getfixturevalue("aws_endpoint")
        db = AwsClients(REGION).dynamodb
        table = f"budgets-{uuid.uuid4().hex[:10]}"
        db.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )

        def items() -> dict[str, tuple[float, float, float]]:
            found = db.scan(TableName=table, ConsistentRead=True)["Items"]
            return {i["pk"]["S"]: (float(i["tokens"]["N"]), float(i["at"]["N"]), float(i["ttl"]["N"])) for i in found}

        yield SharedStore(
            lambda rate, burst, clock: DynamoBuckets(TableItems(db, table), "changes", rate, burst, clock), items, True
        )
        return
    from ringfence.store.budgets import StoredBuckets
    from ringfence.store.sql import SqlStore
    from ringfence.store.sqlite import SqliteStore

    opened: list[SqlStore] = []
    if request.param == "sqlite":

        def open_store() -> SqlStore:
            opened.append(SqliteStore(tmp_path / "store.db"))
            return opened[-1]

    else:
        from ringfence.store.postgres import PostgresStore

        first = request.getfixturevalue("make_pg_store")()  # a fresh, migrated database

        def open_store() -> SqlStore:
            opened.append(PostgresStore(first.dsn, first.audit_key, pool_size=4))
            return opened[-1]

    def rows() -> dict[str, tuple[float, float, float]]:
        found = opened[0].conn().execute("SELECT name, tokens, at, full_at FROM budgets").fetchall()
        return {name: (float(tokens), float(at), float(full_at)) for name, tokens, at, full_at in found}

    yield SharedStore(
        lambda rate, burst, clock: StoredBuckets(open_store(), "changes", rate, burst, clock), rows, False
    )
    for store in opened:
        store.close()


def test_buckets_refill_at_their_rate_and_a_cost_over_the_burst_leaves_a_debt(make_buckets: MakeBuckets) -> None:
    """On a review: a cost over the burst (or a burst under 1, at a cost of 1) was never met and
    its wait came out 0, so it went through every time and spent nothing: the limit was off."""
    clock = FixedClock()
    buckets = make_buckets(2.0, 3.0, clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    assert buckets.take("other") == 0.0  # a bucket a name
    clock.advance(0.5)
    assert buckets.take("k") == 0.0
    with pytest.raises(RequestError) as info:
        buckets.check("k", "slow down", 2.0)
    assert info.value.status == 429
    assert info.value.details == {"retry_after": 1}
    budget = make_buckets(10.0, 100.0, clock)
    assert budget.take("big", 60) == 0.0
    assert budget.take("big", 60) == pytest.approx(2.0)  # 20 more tokens, at 10 a second
    clock.advance(10)
    assert budget.take("big", 500) == 0.0  # over the burst: from a full bucket, into a debt of 400
    assert budget.take("big", 1) == pytest.approx(40.1)
    clock.advance(41)
    assert budget.take("big", 1) == 0.0
    tiny = make_buckets(0.5 / 60, 0.5, clock)  # half an attempt a minute
    assert [tiny.take("t") > 0 for _ in range(3)] == [False, True, True]
    clock.advance(60)
    assert tiny.take("t") > 0  # one attempt every two minutes, not one a minute
    clock.advance(60)
    assert tiny.take("t") == 0.0


def test_what_is_spent_and_given_back_is_kept_in_the_bucket(make_buckets: MakeBuckets) -> None:
    clock = FixedClock()
    budget = make_buckets(1.0, 10.0, clock)
    budget.spend("k", 4)
    assert budget.take("k", 6) == 0.0
    budget.spend("k", 20)  # a change made, whose size was known once made: into debt
    assert budget.take("k", 1) == pytest.approx(21.0)
    clock.advance(21)
    assert budget.take("k", 1) == 0.0
    assert budget.take("g", 8) == 0.0
    budget.give_back("g", 8)
    assert budget.take("g", 10) == 0.0
    budget.give_back("g", 50)  # never past the burst
    assert budget.take("g", 10) == 0.0
    assert budget.take("g", 1) > 0


def test_a_clock_gone_back_and_forward_again_refills_only_the_seconds_that_passed(make_buckets: MakeBuckets) -> None:
    """On a review: a bucket kept the time of its last use even when the clock had gone back,
    so coming forward again refilled the same seconds twice."""
    clock = FixedClock()
    budget = make_buckets(1.0, 10.0, clock)
    assert budget.take("k", 10) == 0.0
    clock.advance(-30)  # (within MAX_CLOCK_GAP_S: further back, the time is brought to it)
    assert budget.take("k", 1) == pytest.approx(1.0)  # refused: nothing refilled going back
    budget.spend("k", 1)  # kept: 1 in debt, and still the later time
    clock.advance(30)
    assert budget.take("k", 1) == pytest.approx(2.0)


def test_hosts_with_clocks_apart_do_not_refill_the_same_seconds_twice(shared_store: SharedStore) -> None:
    """On a review: API hosts 5 s apart, a key's requests alternating between them, granted 200
    of 200 requests in 20 s at 1 a second with a burst of 10 (each host refilled from the other's
    time). Now: the burst, the 20 s, and the 5 s of the clocks' gap once at most."""
    ahead = FixedClock()
    behind = _Offset(ahead, -5.0)
    hosts = [shared_store.make(1.0, 10.0, behind), shared_store.make(1.0, 10.0, ahead)]
    granted = 0
    for step in range(200):
        ahead.advance(0.1)
        granted += hosts[step % 2].take("k") == 0.0
    assert granted <= 10 + 20 + 5 + 1, granted


def test_a_clock_far_ahead_stops_a_keys_refills_for_a_minute_at_most(shared_store: SharedStore) -> None:
    """On a review: a bucket's time kept from a host an hour ahead (stepped back since) stopped
    every other host's refills of the key for the hour."""
    now = FixedClock()
    far, true = shared_store.make(1.0, 10.0, _Offset(now, 3600.0)), shared_store.make(1.0, 10.0, now)
    assert far.take("k", 10) == 0.0
    for _ in range(3):  # refused, and refused again: the time is brought back once and kept
        assert true.take("k", 1) > 0
        now.advance(1)
    now.advance(MAX_CLOCK_GAP_S + 5)
    assert true.take("k", 5) == 0.0


def test_a_refusal_writes_nothing_and_full_buckets_are_forgotten(shared_store: SharedStore) -> None:
    """On a review: each refused charge was a write transaction (PostgreSQL's one write lock, a
    synced SQLite commit), up to the key's rate limit a second for a key over its budget."""
    clock = FixedClock()
    budget = shared_store.make(1.0, 10.0, clock)
    assert budget.take("k", 10) == 0.0
    spent = shared_store.kept()
    clock.advance(0.5)
    assert budget.take("k", 1) == pytest.approx(0.5)
    budget.give_back("other", 5)  # a full bucket given back to: nothing to keep
    assert shared_store.kept() == spent  # neither written
    for n in range(20):
        assert budget.take(f"key-{n}", 1) == 0.0
    clock.advance(11)  # every bucket full again
    assert budget.take("late", 1) == 0.0
    kept = shared_store.kept()
    assert len(kept) == (22 if shared_store.forgets_by_itself else 1), kept  # the newest, and those TTL deletes
    now = clock.time()
    assert sorted(forget_at <= now for _, _, forget_at in kept.values()) == [False] + [True] * (len(kept) - 1)


class _Offset:
    def __init__(self, base: FixedClock, offset: float) -> None:
        self._base, self._offset = base, offset

    def time(self) -> float:
        return self._base.time() + self._offset


def test_two_processes_over_one_store_charge_one_bucket(shared_store: SharedStore) -> None:
    clock = FixedClock()
    first, second = shared_store.make(1.0, 10.0, clock), shared_store.make(1.0, 10.0, clock)
    assert first.take("k", 8) == 0.0
    assert second.take("k", 8) == pytest.approx(6.0)  # the first's 8 are spent for it too
    second.spend("k", 2)
    assert first.take("k", 1) == pytest.approx(1.0)
    clock.advance(3600)
    assert second.take("k", 10) == 0.0  # full again an hour later


def test_charges_racing_from_two_processes_are_none_of_them_lost(shared_store: SharedStore) -> None:
    """4 threads over two processes' buckets take 60 tokens one at a time from a bucket of 30 and
    a clock that stands still: exactly 30 are granted, whatever the interleaving."""
    clock = FixedClock()
    processes = [shared_store.make(1e-9, 30.0, clock), shared_store.make(1e-9, 30.0, clock)]
    granted: list[int] = []
    lock = threading.Lock()

    def charge(buckets: Buckets) -> None:
        mine = 0
        for _ in range(15):
            with contextlib.suppress(OverloadedError):  # DynamoDB: lost every race of its tries (a 503)
                mine += buckets.take("k") == 0.0
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=charge, args=(processes[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 30, granted


def test_a_restarted_server_keeps_a_keys_spent_budget(tmp_path: Path) -> None:
    """The embedded runtime: what a key spent before a restart is still spent after it."""
    from ringfence.bench.servers import create_key, start_server

    data_dir = tmp_path / "d"
    analyst = create_key(data_dir, "analyst", "alerts:read", "alerts:write")
    env = {"RINGFENCE_PEOPLE_WRITES_MIB_PER_HOUR": str(4 / 1024)}  # 4 KiB an hour: one silence
    server = start_server(data_dir, env=env)
    try:
        with server.client(analyst) as c:
            assert c.post("/v1/silences", json=silence_of_3_kib()).status_code == 201
    finally:
        assert server.stop()
    server = start_server(data_dir, env=env)
    try:
        with server.client(analyst) as c:
            refused = c.post("/v1/silences", json=silence_of_3_kib())
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "change_budget"
            assert int(refused.headers["retry-after"]) > 0
            assert len(c.get("/v1/silences").json()["items"]) == 1
    finally:
        server.stop()
