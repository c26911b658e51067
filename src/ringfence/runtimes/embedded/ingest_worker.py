"""Ingest in its own process: decoding, validating and appending producers' bodies.

In the API process that work would hold the GIL against the processor thread, and the
processor's many short SQLite steps (each one releases and retakes the GIL) would wait
behind it. A worker process puts ingest on the other core. The API process only forwards
each body through a pipe and awaits the answer, which comes after the journal commit: a
202 is still a promise. Requests queued together share one transaction (group commit).

The worker exits when the API process goes away (its end of the pipe closes), even after
a kill -9; an append it finished then was never acknowledged, and the producer's retry is
reported as a duplicate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from ringfence.errors import OverloadedError
from ringfence.events.decode import (
    REFERENCE_ONLY,
    EncodedRejections,
    MalformedBody,
    StoredBatch,
    TooCostly,
    TooManyEvents,
    decode_stored_batch,
)
from ringfence.events.fx import FxTable
from ringfence.events.sensitive import redact, redact_logs
from ringfence.log.base import stored_event
from ringfence.runtimes.embedded.group_commit import MAX_GROUP_EVENTS
from ringfence.runtimes.embedded.journal import SEGMENT_S, SqliteLog
from ringfence.runtimes.ingest import IngestReply

log = logging.getLogger("ringfence.ingest")
WRITER_CACHE_MIB = 64
RETRY_AFTER_S = 1
INTERNAL = "this request could not be handled (an internal error, logged); none of its events was kept"


@dataclass(frozen=True)
class IngestRequest:
    request_id: int
    body: bytes
    ndjson: bool
    now: float
    max_events: int
    custom_types: frozenset[str]
    sources: frozenset[str] | None = None  # those the producer's key may write; None: any
    fx: FxTable | None = None  # the rates to convert with from this request on; None: the last ones sent
    budget_s: float | None = None  # validation time allowed beyond an ordinary event's each (None: any)


Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[IngestReply]"]


class _Process:
    """One worker process, its pipe, and the requests it has not answered yet.

    Requests go down the pipe from a thread of their own, replies come up on another, and
    neither holds a lock while it waits on the pipe: the worker answers a group before it
    reads the next, so a sender that waited for it while the replies were not read (or
    the event loop, blocked in a send of a large body) would wait on each other for ever."""

    def __init__(
        self,
        target: tuple[str, int, str, float],
        on_reply: Callable[[_Process, IngestReply | None], None],
        on_unsent: Callable[[_Process, int], None],
    ) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=serve, args=(child, *target), name="ringfence-ingest", daemon=True)
        # the spawned interpreter starts as `python -c ...`, which would put the working
        # directory first on its sys.path: a stray package there must not be imported
        os.environ.setdefault("PYTHONSAFEPATH", "1")
        with _interrupts_ignored():
            self.process.start()
        child.close()
        self.pending: dict[int, Waiter] = {}
        self.fx_sent: FxTable | None = None  # sent once a table, not with every request
        self._on_reply = on_reply
        self._on_unsent = on_unsent
        self.outbox: queue.SimpleQueue[IngestRequest | None] = queue.SimpleQueue()  # None: stop
        self.reader = threading.Thread(target=self._read, name="ringfence-ingest-replies", daemon=True)
        self.reader.start()
        self.sender = threading.Thread(target=self._send, name="ringfence-ingest-requests", daemon=True)
        self.sender.start()

    def _send(self) -> None:
        while True:
            request = self.outbox.get()
            try:
                self.conn.send(request)
            except Exception as exc:  # not sent: the worker gone, its pipe closed, or a bug
                if not isinstance(exc, OSError | ValueError):
                    log.exception("could not send a request to the ingest worker")
                if request is not None:
                    self._on_unsent(self, request.request_id)  # answered 503; the sender lives on
                    continue
            if request is None:
                return

    def _read(self) -> None:
        while True:
            try:
                reply: IngestReply = self.conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._on_reply(self, reply)
            except Exception:  # a bug answering one reply must not stop every later one
                log.exception("could not take a reply of the ingest worker")
        self._on_reply(self, None)
        # the pipe is closed only here, once neither thread uses it: closed while this thread
        # waited on it, its descriptor could be the next worker's pipe before this read ended
        self.outbox.put(None)
        self.sender.join(timeout=30)
        self.conn.close()


class IngestWorker:
    """The API process's handle on the worker process. Thread-safe; awaitable from any loop.

    A worker that died (killed, out of memory) is replaced by the next request; the requests
    it had not answered fail with a 503, and their producers' retries are safe (duplicates
    are recognised).
    """

    def __init__(
        self, journal: Path, partitions: int, synchronous: str, segment_s: float, on_commit: Callable[[int], None]
    ) -> None:
        self._target = (str(journal), partitions, synchronous, segment_s)
        self._on_commit = on_commit
        self._ids = itertools.count()
        self._lock = threading.Lock()  # never held while waiting on a pipe
        self._worker = self._start()

    def _start(self) -> _Process:
        return _Process(self._target, self._on_reply, self._on_unsent)

    @property
    def pid(self) -> int | None:
        return self._worker.process.pid

    async def submit(
        self,
        body: bytes,
        *,
        ndjson: bool,
        now: float,
        max_events: int,
        custom_types: frozenset[str],
        sources: frozenset[str] | None = None,
        fx: FxTable = REFERENCE_ONLY,
        budget_s: float | None = None,
    ) -> IngestReply:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestReply] = loop.create_future()
        with self._lock:
            if not self._worker.process.is_alive():
                self._replace()
            worker = self._worker
            request_id = next(self._ids)
            worker.pending[request_id] = (loop, future)
            table = fx if fx is not worker.fx_sent else None
            worker.fx_sent = fx
            # in order, from the sender thread: the event loop never waits on the pipe
            worker.outbox.put(
                IngestRequest(request_id, body, ndjson, now, max_events, custom_types, sources, table, budget_s)
            )
        return await future

    def _replace(self) -> None:
        """Under the lock: fail what the dead worker owed, start another."""
        dead = self._worker
        log.warning(
            "the ingest worker (pid %s) stopped (%s); starting another", dead.process.pid, dead.process.exitcode
        )
        self._fail_pending(dead)  # its reader, at the end of its pipe, ends its sender and closes it
        self._worker = self._start()

    @staticmethod
    def _fail_pending(worker: _Process) -> None:
        pending, worker.pending = worker.pending, {}
        for loop, future in pending.values():
            loop.call_soon_threadsafe(_fail, future, _stopped())

    def _on_unsent(self, worker: _Process, request_id: int) -> None:
        """The sender could not write request ``request_id``: the worker died (503, retry)."""
        with self._lock:
            waiter = worker.pending.pop(request_id, None)
        if waiter is not None:
            loop, future = waiter
            loop.call_soon_threadsafe(_fail, future, _stopped())

    def _on_reply(self, worker: _Process, reply: IngestReply | None) -> None:
        """A worker answered (``reply``), or its pipe closed (None: it died)."""
        if reply is None:
            with self._lock:
                self._fail_pending(worker)
            return
        if reply.malformed is None and reply.failure is None and reply.error is None and reply.too_many is None:
            try:
                self._on_commit(reply.head)
            except Exception:  # the events are durable: their request is answered so
                log.exception("after an append of the ingest worker")
        with self._lock:
            waiter = worker.pending.pop(reply.request_id, None)
        if waiter is not None:
            loop, future = waiter
            loop.call_soon_threadsafe(_resolve, future, reply)

    def close(self) -> None:
        """Stop the worker after it has answered everything sent (it drains its pipe first)."""
        with self._lock:
            worker = self._worker
        worker.outbox.put(None)  # after every request sent before it
        worker.sender.join(timeout=30)
        worker.process.join(timeout=30)
        worker.conn.close()
        worker.reader.join(timeout=5)


def _stopped() -> OverloadedError:
    return OverloadedError("the ingest worker process stopped and is being replaced; retry", RETRY_AFTER_S)


def _resolve(future: asyncio.Future[IngestReply], reply: IngestReply) -> None:
    if not future.done():
        future.set_result(reply)


def _fail(future: asyncio.Future[IngestReply], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


@contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """A terminal's Ctrl-C reaches the whole process group, and a worker still importing (a
    second or more on a loaded host) printed a KeyboardInterrupt traceback before ``serve``
    could ignore it (a test under load). A process started meanwhile inherits SIGINT ignored;
    only the main thread may set it, and it is set back at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


# -- in the worker process ------------------------------------------------------------------


def serve(conn: Connection, journal: str, partitions: int, synchronous: str, segment_s: float = SEGMENT_S) -> None:
    """The worker's loop: take every request waiting, decode each, append them all in one
    transaction, answer each. Returns when told to stop or when the API process is gone."""
    # a terminal's Ctrl-C reaches the whole process group: the API process stops this one, after
    # answering what it holds (an interrupt here would print a traceback and drop them)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s (ingest worker): %(message)s")
    redact_logs()  # a spawned process: its stderr has no handler of the server's
    journal_log = SqliteLog(Path(journal), partitions, synchronous, cache_mib=WRITER_CACHE_MIB, segment_s=segment_s)
    fx = [REFERENCE_ONLY]  # the rates in force, as the API process last sent them
    try:
        stop = False
        while not stop:
            group, stop = _take_group(conn)
            for reply in _handle_safely(journal_log, group, fx) if group else []:
                conn.send(reply)
    except (EOFError, BrokenPipeError):
        return
    finally:
        journal_log.close()


def _take_group(conn: Connection) -> tuple[list[IngestRequest], bool]:
    """The requests waiting (at least one, unless told to stop), and whether to stop after them."""
    first: IngestRequest | None = conn.recv()
    if first is None:
        return [], True
    group, size = [first], len(first.body)
    while size < MAX_GROUP_EVENTS * 200 and conn.poll():  # ~200 bytes an event
        item: IngestRequest | None = conn.recv()
        if item is None:
            return group, True  # answer what came before the stop
        group.append(item)
        size += len(item.body)
    return group, False


def _handle_safely(journal_log: SqliteLog, group: list[IngestRequest], fx: list[FxTable]) -> list[IngestReply]:
    """Like :func:`_handle`, but whatever goes wrong, every request gets an answer and the
    worker lives on for the next ones."""
    try:
        return _handle(journal_log, group, fx)
    except Exception as exc:
        log.error("an ingest group failed:\n%s", redact(_trace(exc)))
        return [IngestReply(r.request_id, [], [], 0, error=INTERNAL) for r in group]


def _handle(journal_log: SqliteLog, group: list[IngestRequest], fx: list[FxTable]) -> list[IngestReply]:
    """``fx``: the table in force (one item), replaced by a request that brings a new one."""
    decoded: list[tuple[IngestRequest, StoredBatch | MalformedBody | TooCostly | str]] = []
    took: dict[int, float] = {}  # request id -> its validation's CPU time (its producer's turns)
    for request in group:
        if request.fx is not None:
            fx[0] = request.fx
        started = time.thread_time()
        try:
            decoded.append((request, _decode(request, fx[0], journal_log.partitions)))
        except (MalformedBody, TooCostly) as exc:
            decoded.append((request, exc))
        except Exception as exc:  # one request's bug costs that request only
            log.error("an ingest request could not be decoded:\n%s", redact(_trace(exc)))
            decoded.append((request, INTERNAL))
        took[request.request_id] = time.thread_time() - started
    events = [e for _, batch in decoded if isinstance(batch, StoredBatch) for e in batch.events]
    try:
        offsets = journal_log.append_stored(events, max(r.now for r in group)) if events else []
        head = journal_log.head()
    except Exception as exc:  # every waiter gets the error; the worker lives on
        log.exception("journal append failed")
        return [IngestReply(r.request_id, [], [], 0, failure=str(exc)) for r in group]
    replies, start = [], 0
    for request, batch in decoded:
        if isinstance(batch, TooManyEvents):
            replies.append(IngestReply(request.request_id, [], [], head, too_many=(batch.count, batch.limit)))
            continue
        if isinstance(batch, MalformedBody):
            replies.append(IngestReply(request.request_id, [], [], head, malformed=batch.errors))
            continue
        if isinstance(batch, TooCostly):
            reply = IngestReply(request.request_id, [], [], head, too_costly=batch.events, costly_s=batch.costly_s)
            replies.append(reply)
            continue
        if isinstance(batch, str):
            replies.append(IngestReply(request.request_id, [], [], head, error=batch))
            continue
        part = offsets[start : start + len(batch.events)]
        start += len(batch.events)
        appended = [(e[0], o) for e, o in zip(batch.events, part, strict=True)]  # (event_id, offset)
        replies.append(
            IngestReply(
                request.request_id,
                EncodedRejections.of(batch.rejected),
                appended,
                head,
                fx_missing=batch.fx_missing,
                costly_s=batch.costly_s,
                validation_s=took[request.request_id],
            )
        )
    return replies


def _decode(request: IngestRequest, fx: FxTable, partitions: int) -> StoredBatch:
    return decode_stored_batch(
        request.body,
        ndjson=request.ndjson,
        now=request.now,
        max_events=request.max_events,
        partitions=partitions,
        stored_form=stored_event,
        custom_types=request.custom_types,
        sources=request.sources,
        fx=fx,
        budget_s=request.budget_s,
    )


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
