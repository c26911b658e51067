"""A processor over a journal and a store in a folder, run on its own thread, with a pack whose
poison a huge score makes: for the embedded processor's quarantine and commit tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ringfence.alerts.model import AlertQuery
from ringfence.engine import Engine, load_pack
from ringfence.engine.pack import RulePack
from ringfence.events.model import Event
from ringfence.metrics import Metrics
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.processor import Processor
from ringfence.store import SqliteStore
from ringfence.store.quarantine import QuarantineRepository
from ringfence.testing import FixedClock
from tests.helpers.factories import T0

PACK_TEXT = """
version: {version}
types: [custom.score]
features:
  - name: scores
    by: customer_id
    agg: count
    on: [custom.score]
  - name: last_score
    by: customer_id
    agg: last
    of: {of}
    on: [custom.score]
rules:
  - id: high_score
    on: [custom.score]
    when: data.score > 10
    severity: high
    audience: fraud
    title: "high score for {{customer_id}}"
    dedup: "{{event_id}}"
"""
# ``raw``: the score in a list, which a state keeps as it is; a huge one cannot be written
PACK = load_pack(PACK_TEXT.format(version="q1", of="data.raw"))
FIXED = load_pack(PACK_TEXT.format(version="q2", of="data.score"))  # the fix: a number (a huge one as a float)
HUGE = 2**70  # past 64 bits: msgpack (the state codec) cannot hold it in a list
AUDIT_KEY = b"k" * 32


def score(n: int, value: Any, customer: str = "cus_1") -> Event:
    """A custom event as the journal holds it (straight in: ingest would refuse a huge number).

    A huge score fails when its key's state is encoded: at the end of a batch, unless a later
    event of the same key replaced it; so poison here is the last event of its customer. (The
    reference engine reads it as an integer, which the harness's engine is; the compiled core
    reads a JSON number past 64 bits as a float.)"""
    return Event(f"evt-{n}", "custom.score", T0 + n, "bank", {"score": value, "raw": [value]}, customer)


class Harness:
    """A processor over a journal and a store in ``tmp``, run on its own thread."""

    def __init__(self, tmp: Path, pack: RulePack = PACK, engine: Engine | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = SqliteLog(tmp / "journal.db", 2)
        self.store = SqliteStore(tmp / "store.db", AUDIT_KEY)
        self.metrics = Metrics()
        engine = Engine(pack) if engine is None else engine
        self.processor = Processor(self.log, self.store, engine, self.metrics, FixedClock(T0 + 3600))
        self.processor.recover()

    @contextmanager
    def running(self) -> Iterator[Processor]:
        stop = threading.Event()
        thread = threading.Thread(target=self.processor.run, args=(stop, 0.01), daemon=True)
        thread.start()
        try:
            yield self.processor
        finally:
            stop.set()
            self.processor.wakeup.set()
            thread.join(10)
            assert not thread.is_alive()

    def append(self, *events: Event) -> None:
        self.log.append(list(events), T0 + 100)
        self.processor.wakeup.set()

    def caught_up(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.processor.offset < self.log.head():
            assert time.monotonic() < deadline, f"processor stuck at offset {self.processor.offset}"
            time.sleep(0.02)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.02)

    def alerted(self) -> set[str]:
        alerts, _ = self.store.list_alerts(AlertQuery(limit=1000))
        return {a.dedup_key.split("\x1f")[-1] for a in alerts}  # an event's source, then its id

    def quarantined(self) -> list[dict[str, Any]]:
        entries, _ = QuarantineRepository(self.store).entries()
        return [e.to_dict() for e in entries]

    def states(self) -> dict[tuple[str, str], Any]:
        engine = self.processor.engine
        return {(name, key): (s.value, s.seen) for name, table in engine.states.items() for key, s in table.items()}

    def close(self) -> None:
        self.store.close()
        self.log.close()


def quarantined_total(metrics: Metrics) -> float:
    return sum(v for name, _, v in metrics.counters() if name == "ringfence_events_quarantined")


def refuse_alert_of(store: SqliteStore, event_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``store`` refuse the alert of event ``event_id`` (not a failure of the store: a value
    it cannot take), as SQLite refuses an integer past 64 bits."""
    real = store._apply_signal

    def picky(conn: Any, signal: Any, hit: Any) -> Any:
        if signal.event_id == event_id:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(conn, signal, hit)

    monkeypatch.setattr(store, "_apply_signal", picky)
