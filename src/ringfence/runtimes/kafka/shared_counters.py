"""What each kafka service process alone counts, written to PostgreSQL every few seconds and
as it stops, so that ``/v1/stats`` on any API process adds up every process's part
(:class:`~ringfence.store.service_counters.ServiceCounters`): ingest's rejected events and
those in a currency without a rate, a worker's duplicates and late events (counted once its
transaction committed), dispatch's failed sends. A process killed loses what it counted since
its last write; events a worker processed again after a crash count again."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from ringfence.metrics import Metrics
from ringfence.store.service_counters import ServiceCounters
from ringfence.store.sql import SqlStore

log = logging.getLogger("ringfence.kafka.counters")

PUBLISH_EVERY_S = 5.0
PER_PROCESS = ("rejected", "duplicates", "late", "notification_failures", "fx_missing")


def shared_totals(store: SqlStore) -> dict[str, float]:
    """Every process's :data:`PER_PROCESS` counters added up (0 for one none recorded)."""
    recorded = ServiceCounters(store).totals()
    return {name: recorded.get(name, 0.0) for name in PER_PROCESS}


class CountersPublisher:
    """Writes ``metrics``' :data:`PER_PROCESS` counters under an instance name of this process's
    own, when they changed, every :data:`PUBLISH_EVERY_S` until :meth:`stop` (which writes once
    more)."""

    def __init__(self, store: SqlStore, metrics: Metrics, role: str, clock: Callable[[], float] = time.time) -> None:
        self.instance = f"{role}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._counters = ServiceCounters(store)
        self._metrics = metrics
        self._clock = clock
        self._written: dict[str, float] = dict.fromkeys(PER_PROCESS, 0.0)  # nothing to write until one moves
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        stats = self._metrics.stats()
        values = {name: stats[name] for name in PER_PROCESS}
        if values == self._written:
            return
        try:
            self._counters.record(self.instance, values, self._clock())
        except Exception:  # the store down: statistics lag, nothing else waits on them
            log.warning("cannot write this process's counters to the store; trying again", exc_info=True)
            return
        self._written = values

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="counters", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PUBLISH_EVERY_S):
            self.publish()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.publish()
