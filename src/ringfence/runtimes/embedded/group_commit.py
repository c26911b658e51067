"""Group commit: many concurrent ingest requests share one durable log transaction.

The HTTP handlers await :meth:`GroupCommitter.append`; a single writer thread drains
everything queued, appends it in one transaction, and wakes each waiter with its offsets.
One fsync then acknowledges many requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringfence.errors import OverloadedError
from ringfence.events.model import Event
from ringfence.log.base import EventLog

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
            raise _closing()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int | None]] = loop.create_future()
        self._queue.put(_Pending(events, future, loop))
        if self._closed:  # closed meanwhile: the writer may have gone before it came
            self._refuse_queued()
        return await future

    def _run(self) -> None:
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
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        events = [e for pending in group for e in pending.events]
        try:
            offsets = self._log.append(events, self._clock())
        except Exception as exc:  # the waiters get the error, the writer lives on
            for pending in group:
                _settle(pending, _set_exception, exc)
            return
        self._on_commit(self._log.head())
        start = 0
        for pending in group:
            part = offsets[start : start + len(pending.events)]
            start += len(pending.events)
            _settle(pending, _set_result, part)

    def close(self) -> None:
        """Finish what is queued, then stop the writer thread; what comes after is refused."""
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
                _settle(pending, _set_exception, _closing())
        if ended:  # a writer still at work (a slow append) must still find its end
            self._queue.put(None)


def _closing() -> OverloadedError:
    return OverloadedError("ingest is stopping and did not take the events; retry", 1)


def _settle(pending: _Pending, how: Callable[[Any, Any], None], what: Any) -> None:
    """Settle ``pending``'s future from the writer's thread, unless its event loop is gone."""
    with contextlib.suppress(RuntimeError):  # the loop closed: no one awaits it any more
        pending.loop.call_soon_threadsafe(how, pending.future, what)


def _set_result(future: asyncio.Future[list[int | None]], value: list[int | None]) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[list[int | None]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
