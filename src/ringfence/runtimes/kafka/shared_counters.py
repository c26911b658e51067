"""What each kafka service process alone counts, added to PostgreSQL every few seconds and as it
stops, so that ``/v1/stats`` on any API process shows every process's part
(:class:`~ringfence.store.service_counters.ServiceCounters`): ingest's rejected events and
those in a currency without a rate, a worker's duplicates and late events (counted once its
transaction committed), dispatch's failed sends. A process killed loses what it counted since
its last write; events a worker processed again after a crash count again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ringfence.metrics import Metrics
from ringfence.store.service_counters import ServiceCounters
from ringfence.store.sql import SqlStore

log = logging.getLogger("ringfence.kafka.counters")

PUBLISH_EVERY_S = 5.0
STOP_WAIT_S = 5.0  # a stop waits this long for a write under way (the store may hang)
PER_PROCESS = ("rejected", "duplicates", "late", "notification_failures", "fx_missing")


def shared_totals(store: SqlStore) -> dict[str, float]:
    """Every process's :data:`PER_PROCESS` counters added up (0 for one none counted)."""
    recorded = ServiceCounters(store).totals()
    return {name: recorded.get(name, 0.0) for name in PER_PROCESS}


class CountersPublisher:
    """Adds what ``metrics``' :data:`PER_PROCESS` counters counted since the last write, when
    they moved, every :data:`PUBLISH_EVERY_S` until :meth:`stop` (which writes once more,
    unless the store failed the last write: a stop must not wait on a store that is down)."""

    def __init__(self, store: SqlStore, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._counters = ServiceCounters(store)
        self._metrics = metrics
        self._clock = clock
        self._written: dict[str, float] = dict.fromkeys(PER_PROCESS, 0.0)
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        stats = self._metrics.stats()
        now = {name: stats[name] for name in PER_PROCESS}
        counted = {name: now[name] - self._written[name] for name in PER_PROCESS}
        if not any(counted.values()):
            return
        try:
            self._counters.add(counted, self._clock())
        except Exception as exc:  # the store down: statistics lag, nothing else waits on them
            if not self._failing:  # once a spell, not every few seconds
                log.warning("cannot add this process's counters to the store (%s); trying again", exc)
            self._failing = True
            return
        self._failing = False
        self._written = now

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="counters", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PUBLISH_EVERY_S):
            self.publish()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT_S)
            if self._thread.is_alive():
                return  # still in a write the store holds: what it counted since is lost
        if not self._failing:
            self.publish()
