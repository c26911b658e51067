"""Turns at validation: whose request body is validated next, and how much each key may hold.

Validation is one queue for every producer (the embedded runtime's ingest worker process, or
ingest's thread), so the order it takes requests in decides how long one key's flood holds
the others. Used by :class:`ringfence.runtimes.ingest.IngestService`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from ringfence.errors import ClientGone, OverloadedError, TooManyAtOnce

# bodies of at most BUSY_BYTES are validated and appended at once (a body larger than that
# alone); a key may have MAX_REQUESTS_PER_KEY requests under way and MAX_HELD_BYTES_PER_KEY
# of bodies, all keys MAX_HELD_BYTES, as they arrive
BUSY_BYTES = 4 << 20
MAX_REQUESTS_PER_KEY = 32
MAX_HELD_BYTES = 1 << 30
MAX_HELD_BYTES_PER_KEY = 128 << 20
# a second of validation a key's request took counts as this many bytes against its next turns
BYTES_PER_CPU_S = 10 << 20


class Turns:
    """Whose body is validated next, and how much each key may hold.

    First come first served let one key's requests in parallel fill the queue: another key's
    next request waited behind all of them (a minute, with 16 connections of one key, in a
    re-test). Bodies under way are bounded by :data:`BUSY_BYTES`; past it, requests wait, and
    are taken by weighted fair queuing: each gets a tag, its key's previous tag (or the tag of
    the request last taken, if later: a key idle a while gets no credit for it) plus its size,
    and the smallest tag goes next. A key's request's validation time is added to its tag after
    it (:data:`BYTES_PER_CPU_S`), so bodies of events each just under an ordinary event's time
    (seconds a body, charged nothing by the budget) wait behind everyone else's. Ordering keys
    by their decayed time alone let keys fresh or idle a while, with none, go ahead of every
    steady producer (twelve of them held another key 22 s).

    A key holds at most :data:`MAX_REQUESTS_PER_KEY` requests and
    :data:`MAX_HELD_BYTES_PER_KEY` of bodies, all keys :data:`MAX_HELD_BYTES`, counted as
    the bytes arrive (a key's 200 connections of 8 MB bodies grew the server by 2 GB in 6 s).
    Used on the event loop's thread only."""

    def __init__(self, busy_bytes: int = BUSY_BYTES) -> None:
        self._busy_limit = busy_bytes
        self._busy = 0
        self._lines: dict[str, collections.deque[tuple[float, int, asyncio.Future[None]]]] = {}
        self._tags: dict[str, float] = {}  # each key's last tag
        self._taken = 0.0  # the tag of the request last taken: where an idle key starts again
        self._held: dict[str, tuple[int, int]] = {}  # requests and bytes under way, by key
        self._held_bytes = 0
        self._refusal: Callable[[], Exception] | None = None  # set once the server stops

    def stop(self, refusal: Callable[[], Exception]) -> None:
        """The server stops: every request waiting for its turn, and every later one, is
        answered ``refusal()`` now; those in their turn finish. Waiting out the server's grace
        period instead ended them unanswered (uvicorn's 500 for a cancelled request)."""
        self._refusal = refusal
        for line in self._lines.values():
            for _, _, waiter in line:
                if not waiter.done():
                    waiter.set_exception(refusal())
        self._lines.clear()

    @contextlib.contextmanager
    def holding(self, producer: str) -> Iterator[Callable[[int], None]]:
        """Hold a place for a request of ``producer`` (429 past its key's requests); yields what
        to call with each part of its body as it arrives (429 past its key's bytes, 503 past
        every key's)."""
        requests, _ = self._held.get(producer, (0, 0))
        if requests >= MAX_REQUESTS_PER_KEY:
            raise TooManyAtOnce("requests", MAX_REQUESTS_PER_KEY)
        self._held[producer] = (requests + 1, self._held.get(producer, (0, 0))[1])
        arrived = 0

        def take(size: int) -> None:
            nonlocal arrived
            count, held = self._held[producer]
            if held + size > MAX_HELD_BYTES_PER_KEY:
                raise TooManyAtOnce("MiB of request bodies", MAX_HELD_BYTES_PER_KEY >> 20)
            if self._held_bytes + size > MAX_HELD_BYTES:
                raise OverloadedError("ingest holds as many request bodies as it may; retry later", 1)
            arrived += size
            self._held_bytes += size
            self._held[producer] = (count, held + size)

        try:
            yield take
        finally:
            self._held_bytes -= arrived
            count, held = self._held[producer]
            if count > 1:
                self._held[producer] = (count - 1, held - arrived)
            else:
                del self._held[producer]

    def spent(self, producer: str, seconds: float) -> None:
        """Count ``seconds`` of validation of a request of ``producer`` against its next turns,
        those waiting already included."""
        penalty = seconds * BYTES_PER_CPU_S
        self._tags[producer] = max(self._tags.get(producer, 0.0), self._taken) + penalty
        if producer in self._lines:
            self._lines[producer] = collections.deque((t + penalty, s, w) for t, s, w in self._lines[producer])
        if len(self._tags) > 256:  # a key whose tag is behind the last taken starts from there anyway
            self._tags = {p: tag for p, tag in self._tags.items() if tag > self._taken}

    def _tag(self, producer: str, size: int) -> float:
        tag = max(self._tags.get(producer, 0.0), self._taken) + size
        self._tags[producer] = tag
        return tag

    @contextlib.asynccontextmanager
    async def turn(
        self, producer: str, size: int, gone: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[None]:
        """Wait for the turn of a body of ``size`` bytes of ``producer``; ClientGone if ``gone``
        (returning once its client disconnects, watched only while it waits) returns first; the
        refusal of :meth:`stop` once the server stops."""
        if self._refusal is not None:
            raise self._refusal()
        tag = self._tag(producer, size)
        if not self._lines and self._fits(size):
            self._busy += size
            self._taken = max(self._taken, tag - size)
        else:
            await self._wait(producer, tag, size, gone)
        try:
            yield
        finally:
            self._busy -= size
            self._admit()

    async def _wait(self, producer: str, tag: float, size: int, gone: Callable[[], Awaitable[None]] | None) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines.setdefault(producer, collections.deque()).append((tag, size, waiter))
        self._admit()
        watch: asyncio.Future[None] | None = None
        try:
            if gone is not None and not waiter.done():
                watch = asyncio.ensure_future(gone())
                await asyncio.wait([waiter, watch], return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    raise ClientGone
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._busy -= size  # its turn came as it was given up
                self._admit()
            else:
                waiter.cancel()
                self._drop(producer, waiter)
            raise
        finally:
            if watch is not None:
                watch.cancel()

    def _fits(self, size: int) -> bool:
        return self._busy == 0 or self._busy + size <= self._busy_limit

    def _admit(self) -> None:
        """Start the waiting request of the smallest tag while it fits; one that does not fit
        waits for room, and the others with it (a large body is not passed for ever)."""
        while self._lines:
            producer = min(self._lines, key=lambda p: self._lines[p][0][0])
            line = self._lines[producer]
            tag, size, waiter = line[0]
            if not waiter.done():  # else given up: dropped
                if not self._fits(size):
                    return
                self._busy += size
                self._taken = max(self._taken, tag - size)
                waiter.set_result(None)
            line.popleft()
            if not line:
                del self._lines[producer]

    def _drop(self, producer: str, waiter: asyncio.Future[None]) -> None:
        line = self._lines.get(producer)
        if line is None:
            return
        kept = collections.deque(item for item in line if item[2] is not waiter)
        if kept:
            self._lines[producer] = kept
        else:
            del self._lines[producer]
        self._admit()
