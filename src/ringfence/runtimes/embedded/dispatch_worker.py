"""The alert pipeline in its own process: the dispatcher's stages off the API process's GIL.

At a high alert rate the dispatcher (intake, grouping, delivery, housekeeping) took up to a
sixth of the API process's interpreter, which the processor thread and the HTTP server
share; in a worker process it runs on the other core. It opens the data dir's store as the
processor does; the outbox, the claims and the notification log in the store are what make
delivery exactly-once, so nothing else has to be shared. The API process tells it when a
batch committed alerts and when a rule pack changed the auto-resolve periods; it sends back
what the API process serves: alert changes for the live stream, notification counts for
``/metrics`` and its log records.

The worker stops when the API process goes away (its end of the pipe closes), even after a
kill -9; a worker that dies is started again.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from ringfence.alerts.config import load_alerting
from ringfence.alerts.dispatcher import Dispatcher
from ringfence.alerts.stream import AlertStream
from ringfence.clock import SystemClock
from ringfence.config import Settings
from ringfence.metrics import Metrics
from ringfence.runtimes.embedded.data_dir import open_store

log = logging.getLogger("ringfence.dispatcher")
RESTART_AFTER_S = 1.0  # a worker that died is started again after this long, not in a loop


@dataclass(frozen=True)
class AutoResolve:
    """The active pack's quiet periods (seconds) after which each rule's alerts resolve."""

    periods: dict[str, float]


WAKE = "wake"
STOP = None
ToWorker = AutoResolve | str | None


@dataclass(frozen=True)
class Change:
    """An alert change, for the live stream."""

    event: dict[str, Any]


@dataclass(frozen=True)
class Counts:
    """Notification attempts since the last report, by (receiver, outcome)."""

    notifications: dict[tuple[str, str], float]


@dataclass(frozen=True)
class LogLine:
    name: str
    level: int
    message: str


FromWorker = Change | Counts | LogLine


class DispatchWorker:
    """The API process's handle on the dispatcher process. :meth:`wake` and
    :meth:`set_auto_resolve` may be called from any thread."""

    def __init__(
        self, settings: Settings, auto_resolve: Mapping[str, float], stream: AlertStream, metrics: Metrics
    ) -> None:
        self._settings = settings
        self._auto_resolve = dict(auto_resolve)
        self._stream = stream
        self._metrics = metrics
        self._lock = threading.Lock()
        self._closing = False
        self._conn, self._process = self._start()
        self._reader = threading.Thread(target=self._read, name="ringfence-dispatcher-replies", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _start(self) -> tuple[Connection, multiprocessing.process.BaseProcess]:
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        conn, child = context.Pipe(duplex=True)
        process = context.Process(
            target=serve, args=(child, self._settings, self._auto_resolve), name="ringfence-dispatcher", daemon=True
        )
        os.environ.setdefault("PYTHONSAFEPATH", "1")  # see ingest_worker: no stray package first on sys.path
        process.start()
        child.close()
        return conn, process

    def wake(self) -> None:
        """A batch committed alert changes, or a notification was re-driven: look now."""
        self._send(WAKE)

    def set_auto_resolve(self, periods: Mapping[str, float]) -> None:
        with self._lock:
            self._auto_resolve = dict(periods)
        self._send(AutoResolve(dict(periods)))

    def _send(self, message: ToWorker) -> None:
        # a dead worker refuses it: the reader starts another, which looks at the outbox first
        with self._lock, contextlib.suppress(OSError):
            self._conn.send(message)

    def _read(self) -> None:
        """Serve what the worker sends; when it dies, start another (unless closing)."""
        while True:
            try:
                message: FromWorker = self._conn.recv()
            except (EOFError, OSError):
                with self._lock:
                    if self._closing:
                        return
                log.warning(
                    "the dispatcher process (pid %s) stopped (%s); starting another",
                    self._process.pid,
                    self._process.exitcode,
                )
                time.sleep(RESTART_AFTER_S)
                with self._lock:
                    if self._closing:
                        return
                    self._conn.close()
                    self._conn, self._process = self._start()
                continue
            self._serve(message)

    def _serve(self, message: FromWorker) -> None:
        if isinstance(message, Change):
            self._stream.publish(message.event)
        elif isinstance(message, Counts):
            for (receiver, outcome), amount in message.notifications.items():
                self._metrics.notifications.labels(receiver, outcome).inc(amount)
        else:
            logging.getLogger(message.name).log(message.level, "%s", message.message)

    def close(self) -> None:
        """Stop the worker after its current step."""
        with self._lock:
            self._closing = True
            process, conn = self._process, self._conn
            with contextlib.suppress(OSError):
                conn.send(STOP)
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        self._reader.join(timeout=5)
        conn.close()


# -- in the worker process ------------------------------------------------------------------


class _Relay:
    """The worker's end of the pipe: only the dispatcher's thread sends on it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sent: dict[tuple[str, str], float] = {}

    def counts(self, metrics: Metrics) -> None:
        """Send the notification attempts counted since the last call."""
        deltas: dict[tuple[str, str], float] = {}
        for family in metrics.notifications.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                key = (sample.labels["receiver"], sample.labels["outcome"])
                delta = sample.value - self.sent.get(key, 0.0)
                if delta:
                    deltas[key] = delta
                    self.sent[key] = sample.value
        if deltas:
            self.conn.send(Counts(deltas))


class _RelayedStream(AlertStream):
    """The live stream's publisher, in the worker: each change goes to the API process."""

    def __init__(self, relay: _Relay) -> None:
        super().__init__()
        self._relay = relay

    def publish(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the API process is gone: no one is watching
            self._relay.conn.send(Change(event))


class _RelayedLog(logging.Handler):
    """The worker's log records, written by the API process's logging."""

    def __init__(self, relay: _Relay) -> None:
        super().__init__(logging.INFO)
        self._relay = relay
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if threading.get_ident() != self._thread:  # the pipe has one sender; others log here
            if logging.lastResort is not None:
                logging.lastResort.handle(record)
            return
        with contextlib.suppress(OSError):
            self._relay.conn.send(LogLine(record.name, record.levelno, self.format(record)))


def serve(conn: Connection, settings: Settings, auto_resolve: dict[str, float]) -> None:
    """The worker: the dispatcher's loop on this thread, the pipe's messages on another.
    Returns when told to stop or when the API process is gone."""
    relay = _Relay(conn)
    root = logging.getLogger()
    root.handlers[:] = [_RelayedLog(relay)]
    root.setLevel(settings.log_level.upper())
    periods = dict(auto_resolve)
    stop = threading.Event()
    metrics = Metrics()
    store = open_store(settings.data_dir)
    dispatcher = Dispatcher(
        store,
        load_alerting(settings.alerting),
        SystemClock(),
        metrics,
        _RelayedStream(relay),
        auto_resolve=lambda: periods,
    )

    def listen() -> None:
        nonlocal periods
        try:
            while (message := conn.recv()) is not STOP:
                if isinstance(message, AutoResolve):
                    periods = message.periods
                dispatcher.wakeup.set()
        except (EOFError, OSError):
            pass
        stop.set()
        dispatcher.wakeup.set()

    threading.Thread(target=listen, name="ringfence-dispatcher-pipe", daemon=True).start()
    try:
        dispatcher.run(stop, after_step=lambda: relay.counts(metrics))
    except (EOFError, BrokenPipeError):
        pass  # the API process is gone
    finally:
        dispatcher.close()
        store.close()
