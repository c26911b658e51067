"""The live alert stream (``GET /v1/alerts/stream``) across the kafka runtime's processes:
dispatch, which takes in every change of every alert, writes each one it shows to PostgreSQL
(``alert_feed``), and each api process follows the feed into its own
:class:`~ringfence.alerts.stream.AlertStream` while someone watches.

A live view, not a log: rows are kept :data:`FEED_KEEP_S`; a change written while no api
process followed, or lost when dispatch died between its commit and its write, is not shown
again, and with several dispatch services a row committed after a later one was read is
missed (the alerts themselves are in the store, as ever)."""

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

    def __init__(self, store: SqlStore, stream: AlertStream) -> None:
        self._store = store
        self._stream = stream
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
        after: int | None = None  # the last row shown; None while nobody watches
        while not self._stop.wait(FOLLOW_EVERY_S):
            if not self._stream.subscribers:
                after = None
                continue
            try:
                after = self._follow(after)
            except Exception:
                log.warning("cannot read the live alert feed; trying again", exc_info=True)

    def _follow(self, after: int | None) -> int:
        conn = self._store.conn()
        if after is None:
            return int(conn.execute("SELECT coalesce(max(seq), 0) FROM alert_feed").fetchone()[0])
        rows = conn.execute(
            "SELECT seq, event FROM alert_feed WHERE seq > ? ORDER BY seq LIMIT ?", (after, READ_AT_ONCE)
        ).fetchall()
        for seq, event in rows:
            self._stream.publish(msgspec.json.decode(event))
            after = int(seq)
        return after
