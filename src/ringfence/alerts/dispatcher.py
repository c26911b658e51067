"""The alert pipeline, as a sequence of stages in the manner of Alertmanager's ``notify``:

    outbox ──▶ mute ──▶ group ──▶ flush ──▶ deliver          (and, every few seconds:
               silences,  routes,   due groups  the notification     auto-resolve, retention)
               inhibition group_by  to the log  log, with retries

The processor writes each alert change to an outbox in the transaction that makes it; the
stages (:mod:`.stages`) take it from there. The decisions are the pure functions of
:mod:`.lifecycle`, :mod:`.muting`, :mod:`.grouping` and :mod:`.delivery`; what they decide is
kept through a :class:`~ringfence.alerts.ports.PipelineStore` (SQLite/PostgreSQL:
``store/pipeline.py``; DynamoDB: ``runtimes/aws/pipeline.py``), so a restart neither re-sends
nor forgets. Runs as a thread of the embedded runtime, in the kafka runtime's dispatch
service and in the aws runtime's dispatch Lambda; :meth:`Dispatcher.step` is one pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import httpx

from ringfence.alerts.config import AlertingConfig, Route
from ringfence.alerts.notify import Notifier, notifiers_of
from ringfence.alerts.notify.deadline import receiver_client
from ringfence.alerts.ports import PipelineStore
from ringfence.alerts.stages import (
    HOUSEKEEPING_EVERY_S,
    PASS_WAIT_S,
    AutoResolve,
    Deliver,
    Every,
    Flush,
    Group,
    Intake,
    Mute,
    Retention,
    Stage,
)
from ringfence.alerts.stream import AlertPublisher
from ringfence.clock import Clock
from ringfence.metrics import Metrics

log = logging.getLogger("ringfence.dispatcher")
MORE_PASSES = 50  # more delivery passes of a step that waits for its sends: 100 of each receiver's at most


def _flatten(route: Route) -> dict[str, Route]:
    out = {route.id: route}
    for child in route.routes:
        out.update(_flatten(child))
    return out


class Dispatcher:
    """The stages over one store; :meth:`run` loops them on a thread, :meth:`step` is one pass.

    ``auto_resolve``: the quiet period (seconds) after which each rule's alerts resolve.
    """

    def __init__(
        self,
        store: PipelineStore,
        config: AlertingConfig,
        clock: Clock,
        metrics: Metrics,
        stream: AlertPublisher | None = None,
        auto_resolve: Callable[[], Mapping[str, float]] = dict,
        client: httpx.Client | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.stream = stream
        self._client = client or receiver_client()
        self.notifiers: dict[str, Notifier] = notifiers_of(config, self._client)
        self.wakeup = threading.Event()
        routes = _flatten(config.route)
        self.intake = Intake(store, (Mute(config.inhibit_rules), Group(config, routes, self.notifiers)), stream)
        self.flush = Flush(store, routes, config.notify_resolved)
        timeouts = {name: float(getattr(r.options, "timeout_s", 0.0)) for name, r in config.receivers.items()}
        self.deliver = Deliver(store, self.notifiers, config.retry, clock, metrics, timeouts)
        self.deliver.on_sent = self.wakeup.set
        self.auto_resolve = AutoResolve(store, auto_resolve)
        self.retention = Retention(store)
        self.stages: tuple[Stage, ...] = (
            self.intake,
            self.flush,
            self.deliver,
            Every(HOUSEKEEPING_EVERY_S, self.auto_resolve),
            Every(HOUSEKEEPING_EVERY_S, self.retention),
        )

    def run(self, stop: threading.Event, idle_wait_s: float = 0.2) -> None:
        while not stop.is_set():
            try:
                busy = self.step(wait=PASS_WAIT_S)  # slow sends finish on their threads meanwhile
            except Exception:
                log.exception("dispatcher step failed; retrying")
                stop.wait(1.0)
                continue
            if not busy:
                self.wakeup.wait(idle_wait_s)
                self.wakeup.clear()

    def step(self, deadline: float | None = None, wait: float | None = None) -> int:
        """One pass of every stage; how much was done (0: nothing was due). ``deadline``
        (:func:`time.monotonic` seconds): when the process may be stopped; ``wait``: how long
        the pass waits for its sends (None: until they end, and then more passes send every
        notification due, not a pass's 2 of each receiver); see :class:`Deliver`."""
        now = self.clock.time()
        self.deliver.deadline, self.deliver.wait = deadline, wait
        try:
            done = sum(stage(now) for stage in self.stages)
            if wait is None:  # a caller that waits for its sends gets every due one sent, not a pass's 2 a receiver
                for _ in range(MORE_PASSES):
                    sent = self.deliver(self.clock.time())
                    if not sent:
                        break
                    done += sent
            return done
        finally:
            self.deliver.deadline, self.deliver.wait = None, None

    def close(self) -> None:
        self.deliver.close()
        self._client.close()
