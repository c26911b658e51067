"""Silences ("no event from this source for 5 minutes") on the aws path: the one row every
event of a busy source moves is merged, not versioned, so shards never conflict on it, and
the silence still fires as on the embedded runtime: on event time, and on the wall clock."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ringfence.alerts.model import alert_id
from ringfence.runtimes.aws.processor import ShardProcessor
from ringfence.testing import event
from tests.helpers.aws import DeploymentFactory, first_commits_together, stream_record
from tests.helpers.parity import embedded_alerts

SILENT = alert_id("ops_source_silent", "partner-bank", 1)


def traffic(t0: float) -> list[dict[str, Any]]:
    """partner-bank speaks for a minute from 40 customers, then only partner-other goes on."""

    def login(at: float, n: int, source: str) -> dict[str, Any]:
        c = n % 40
        return event(
            "login.succeeded", at=at, customer_id=f"cus_{c:03d}", source=source, device_id=f"dev_{c}", ip=f"10.0.0.{c}"
        )

    bank = [login(t0 + i, i, "partner-bank") for i in range(60)]
    other = [login(t0 + 60 + i, i, "partner-other") for i in range(0, 400, 4)]
    return bank + other


def test_a_silence_fires_as_on_the_embedded_runtime(deploy: DeploymentFactory, tmp_path: Path) -> None:
    events = traffic(time.time() - 3600)
    expected = embedded_alerts(tmp_path / "embedded", events)
    assert SILENT in expected

    aws = deploy(shards=2, batch_size=20)
    aws.send(events)
    aws.stream.drain()
    assert aws.alerts() == expected
    alert = aws.runtime.alerts.get_alert(SILENT)
    assert alert.evidence["events"][-1]["event_id"] == events[59]["event_id"]  # the last word heard


def test_shards_moving_one_silence_at_once_do_not_conflict(deploy: DeploymentFactory) -> None:
    t0 = time.time() - 3600
    d = deploy(shards=2, batch_size=100)
    events = traffic(t0)[:60]
    d.send(events)
    rt = d.runtime
    shards = d.stream.shard_ids()
    batches = {s: d.stream.read(s) for s in shards}
    assert all(batches.values())  # both shards hold partner-bank's events
    together = first_commits_together()
    outcomes = {}

    def run(shard: str) -> None:
        p = ShardProcessor(rt.pack, rt.state, rt.alerts, rt.processor.announce, rt.processor.poison)
        p.before_commit = together
        records = [stream_record(r) for r in d.stream.event_for(shard, batches[shard])["Records"]]
        outcomes[shard] = p.process(shard, records)

    threads = [threading.Thread(target=run, args=(s,)) for s in shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [o.conflicts for o in outcomes.values()] == [0, 0]
    assert sum(o.processed for o in outcomes.values()) == 60
    # the row holds the newest deadline of the two: the last event heard, plus five minutes
    ((deadline, row_key),) = rt.state.due_timers(t0 + 10_000, 10)
    assert row_key[1] == "partner-bank"
    assert deadline == datetime.fromisoformat(events[-1]["occurred_at"]).timestamp() + 300
    assert rt.state.load([row_key]).rows[row_key].high == deadline


def test_a_quiet_source_is_declared_silent_by_the_wall_clock_tick(deploy: DeploymentFactory) -> None:
    d = deploy(shards=2)
    d.send(traffic(time.time() - 30)[:60])  # partner-bank, then nothing at all
    d.stream.drain()
    rt = d.runtime
    assert rt.processor.tick().commits == 0  # not quiet for long enough yet
    assert SILENT not in d.alerts()
    later = time.time() + 400
    rt.processor.clock = lambda: later
    assert rt.processor.tick().alerts_created == 1
    assert SILENT in d.alerts()
    assert rt.processor.tick().alerts_created == 0  # once


def test_a_tick_whose_clock_is_behind_the_last_ticks_still_declares_a_silence(deploy: DeploymentFactory) -> None:
    """The tick's hits are ordered by its commits, not by the clocks of the hosts it ran on: a
    tick on a host whose clock is behind the previous tick's would otherwise have its hits
    taken for applied."""
    d = deploy(shards=1)
    rt = d.runtime
    d.send(traffic(time.time() - 1000)[:60])  # partner-bank, then nothing
    d.stream.drain()
    now = time.time()
    rt.processor.clock = lambda: now + 4000
    assert rt.processor.tick().alerts_created == 1  # partner-bank is silent
    rt.processor.clock = time.time
    d.send([event("login.succeeded", at=time.time() - 1, customer_id="cus_x", source="partner-bank")])
    d.stream.drain()  # partner-bank speaks once more, and is silent again
    rt.processor.clock = lambda: now + 3000  # a later tick, on a clock 1,000 s behind
    assert rt.processor.tick().commits == 1
    assert rt.alerts.get_alert(SILENT).count == 2  # the second silence's hit, counted into the open alert


def test_a_later_chunk_sees_the_silence_its_invocation_pushed_but_has_not_written(deploy: DeploymentFactory) -> None:
    t0 = time.time() - 3600

    def login(at: float, customer: str, source: str) -> dict[str, Any]:
        return event("login.succeeded", at=at, customer_id=customer, source=source, device_id=f"d-{customer}")

    d = deploy(shards=1, batch_size=100)
    d.send([login(t0, "cus_a", "partner-bank")])  # deadline t0 + 300, written
    d.stream.drain()
    # one invocation, several chunks: partner-bank speaks again at t0 + 200 (deadline t0 + 500,
    # written at the invocation's end) in the first; later chunks only hold traffic from
    # elsewhere, the last of it past t0 + 300: the chunk that loads the old deadline to fire it
    # must see the pending one
    d.send(
        [login(t0 + 200, "cus_a", "partner-bank")]
        + [login(t0 + 250, f"cus_{i}", "web") for i in range(20)]
        + [login(t0 + 350, f"cus_{i}", "web") for i in range(20, 40)]
    )
    assert d.stream.poll() == 41
    assert d.stream.invocations == 2
    assert SILENT not in d.alerts()  # the source was heard at t0 + 200: not silent at t0 + 300
    d.send([login(t0 + 600, "cus_b", "web")])
    d.stream.drain()
    alert = d.runtime.alerts.get_alert(SILENT)
    assert alert.first_seen == datetime.fromtimestamp(t0 + 500, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
