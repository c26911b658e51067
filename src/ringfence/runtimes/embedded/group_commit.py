"""Group commit: many concurrent ingest requests share one durable log transaction.

The HTTP handlers await :meth:`GroupCommitter.append`; a single writer thread drains
everything queued, appends it in one transaction, and wakes each waiter with its offsets.
One fsync then acknowledges many requests.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ringfence.errors import OverloadedError
from ringfence.events.model import Event
from ringfence.log.base import EventLog
from ringfence.runtimes.ingest import settle, stopping

log = logging.getLogger("ringfence.journal")

MAX_GROUP_EVENTS = 20_000


@dataclass
class _Pending:
    events: list[Event]
    future: asyncio.Future[list[int | None]]
    loop: asyncio.AbstractEventLoop


class GroupCommitter:
    """Owns the log's writer thread. ``on_commit`` is told the new head after each group."""

    def __init__(self, log: EventLog, clock: Callable[[], float], on_commit: Callable[[int], None]) -> None:
        self._log = log
        self._clock = clock
        self._on_commit = on_commit
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ringfence-log-writer", daemon=True)
        self._thread.start()

    async def append(self, events: list[Event]) -> list[int | None]:
        """Append durably; resolve to each event's offset (None = duplicate). Raises
        OverloadedError (503, retry) once the committer is closing."""
        if self._closed:
            raise stopping()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int | None]] = loop.create_future()
        self._queue.put(_Pending(events, future, loop))
        if self._closed:  # closed meanwhile: the writer may have gone before it came
            self._refuse_queued()
        return await future

    @property
    def alive(self) -> bool:
        """Its writer thread runs: false once closed, or after a bug ended it (readiness says so)."""
        return self._thread.is_alive() and not self._closed

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:
            log.exception("the journal's writer thread ended on a bug; appends are answered 503 until a restart")
        finally:  # closed, or a bug: every append still waiting is answered
            self._closed = True
            self._refuse_queued()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first.events)
            while size < MAX_GROUP_EVENTS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
                size += len(item.events)
            try:
                self._commit(group)
            except Exception:  # one group's bug must not stop ingest for every later request
                log.exception("a group commit failed unexpectedly; its requests are answered 503")
                failure = OverloadedError("the journal did not take the events (an internal error, logged); retry", 1)
                for pending in group:
                    settle(pending.loop, pending.future, error=failure)

    def _commit(self, group: list[_Pending]) -> None:
        events = [e for pending in group for e in pending.events]
        try:
            offsets = self._log.append(events, self._clock())
        except Exception as exc:  # the waiters get the error, the writer lives on
            for pending in group:
                settle(pending.loop, pending.future, error=exc)
            return
        try:
            self._on_commit(self._log.head())
        except Exception:  # the events are durable: their requests are answered so
            log.exception("after an append to the journal")
        start = 0
        for pending in group:
            part = offsets[start : start + len(pending.events)]
            start += len(pending.events)
            settle(pending.loop, pending.future, part)

    def close(self) -> None:
        """Finish what is queued, then stop the writer thread; what comes after is refused.
        (An append racing the close may be refused with those behind it: 503, nothing kept.)"""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._refuse_queued()

    def _refuse_queued(self) -> None:
        """Answer 503 to every append still queued behind the writer's end."""
        ended = False
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            if pending is None:
                ended = True
            else:
                settle(pending.loop, pending.future, error=stopping())
        if ended:  # a writer still at work (a slow append) must still find its end
            self._queue.put(None)
