"""The live alert stream (``GET /v1/alerts/stream``) across the kafka runtime's processes:
dispatch, which takes in every change of every alert, writes each one it shows to PostgreSQL
(``alert_feed``), and each api process follows the feed into its own
:class:`~ringfence.alerts.stream.AlertStream` while someone watches.

A live view, not a log: rows are kept :data:`FEED_KEEP_S`; a change written while no api
process followed, or lost when dispatch died between its commit and its write, is not shown
(the alerts themselves are in the store, as ever). With several dispatch services a row can
commit after a later one was read: the follower looks again for the numbers it skipped, for
:data:`GAP_PATIENCE_S`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ringfence.alerts.stream import AlertStream
from ringfence.store.sql import SqlStore

log = logging.getLogger("ringfence.kafka.feed")

FEED_KEEP_S = 600.0
PRUNE_EVERY_S = 60.0
FOLLOW_EVERY_S = 0.5
READ_AT_ONCE = 500
GAP_PATIENCE_S = 10.0  # a row numbered before one already read may still commit (another dispatch)
MAX_GAPS = 1_000  # skipped numbers looked for at once: a rolled-back burst leaves a run of them


class FeedWriter:
    """Dispatch's side: an :class:`~ringfence.alerts.stream.AlertPublisher` writing to the feed."""

    def __init__(self, store: SqlStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._pruned = 0.0
        self._failing = False

    def publish(self, event: dict[str, Any]) -> None:
        now = self._clock()
        try:
            conn = self._store.conn()
            conn.execute("INSERT INTO alert_feed (at, event) VALUES (?, ?)", (now, msgspec.json.encode(event).decode()))
            if now - self._pruned >= PRUNE_EVERY_S:
                conn.execute("DELETE FROM alert_feed WHERE at < ?", (now - FEED_KEEP_S,))
                self._pruned = now
        except Exception as exc:  # a live view: the change is in the store; only its showing is lost
            if not self._failing:
                log.warning("cannot write to the live alert feed (%s); changes are not shown live meanwhile", exc)
            self._failing = True
            return
        self._failing = False


class FeedFollower:
    """An api process's side: while ``stream`` has subscribers, reads the feed's new rows every
    :data:`FOLLOW_EVERY_S` and publishes them (from the newest row when the first one came)."""

    def __init__(self, store: SqlStore, stream: AlertStream, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._stream = stream
        self._clock = clock
        self._after: int | None = None  # the newest row read; None while nobody watches
        self._gaps: dict[int, float] = {}  # numbers skipped below it, and when: maybe not committed yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(FOLLOW_EVERY_S):
            if not self._stream.subscribers:
                self._after, self._gaps = None, {}
                continue
            try:
                self.follow()
            except Exception:
                log.warning("cannot read the live alert feed; trying again", exc_info=True)

    def follow(self) -> None:
        """Publish the rows written since the last call and those that filled a gap it left;
        the first call only finds where the feed ends."""
        conn = self._store.conn()
        if self._after is None:
            self._after = int(conn.execute("SELECT coalesce(max(seq), 0) FROM alert_feed").fetchone()[0])
            return
        now = self._clock()
        self._gaps = {seq: since for seq, since in self._gaps.items() if now - since < GAP_PATIENCE_S}
        late = []
        if self._gaps:
            marks = ", ".join("?" * len(self._gaps))
            late = conn.execute(
                f"SELECT seq, event FROM alert_feed WHERE seq IN ({marks})",  # nosec # noqa: S608 - placeholders only
                tuple(self._gaps),
            ).fetchall()
        new = conn.execute(
            "SELECT seq, event FROM alert_feed WHERE seq > ? ORDER BY seq LIMIT ?", (self._after, READ_AT_ONCE)
        ).fetchall()
        for seq, _ in late:
            del self._gaps[int(seq)]
        for seq, _ in new:
            self._skipped(self._after, int(seq), now)
            self._after = int(seq)
        for _, event in sorted(late + new):
            self._stream.publish(msgspec.json.decode(event))

    def _skipped(self, after: int, seq: int, now: float) -> None:
        for missing in range(max(after + 1, seq - MAX_GAPS), seq):
            self._gaps[missing] = now
        while len(self._gaps) > MAX_GAPS:  # the oldest first: dicts keep their order of insertion
            del self._gaps[next(iter(self._gaps))]
