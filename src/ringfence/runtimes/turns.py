"""Turns at validation: whose request body is validated next, and how much each key may hold.

Validation is one queue for every producer (the embedded runtime's ingest worker process, or
ingest's thread), so the order it takes requests in decides how long one key's flood holds
the others. Used by :class:`ringfence.runtimes.ingest.IngestService`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ringfence.errors import ClientGone, OverloadedError, TooManyAtOnce

# bodies of at most BUSY_BYTES are validated and appended at once (a body larger than that
# alone); a key may have MAX_REQUESTS_PER_KEY requests under way, and all keys' requests may
# hold MAX_HELD_BYTES of bodies as they arrive
BUSY_BYTES = 4 << 20
MAX_REQUESTS_PER_KEY = 32
MAX_HELD_BYTES = 1 << 30
SPENT_HALF_LIFE_S = 10.0  # how quickly a key's validation time counts for less


class Turns:
    """Whose body is validated next, and how much each key may hold.

    Validation is one queue for every producer (the ingest worker process, or ingest's thread),
    and first come first served let one key's requests in parallel fill it: another key's next
    request waited behind all of them (a minute, with 16 connections of one key, in a re-test).
    Bodies under way are bounded by :data:`BUSY_BYTES`; past it, a request waits in its key's
    line, and the next request taken is the head of the line of the key whose requests took the
    least validation time lately (decayed with a half-life of :data:`SPENT_HALF_LIFE_S`): a key
    sending bodies of events each just under an ordinary event's time (seconds a body, charged
    nothing) waits behind everyone else's, where taking turns by request gave it one of every
    two. A key holds at most :data:`MAX_REQUESTS_PER_KEY` requests, and all keys
    :data:`MAX_HELD_BYTES` of bodies as they arrive (a key's 200 connections of 8 MB bodies grew
    the server by 2 GB in 6 s; declared lengths counted before any byte came let idle
    connections of four keys refuse everyone). Used on the event loop's thread only."""

    def __init__(self, busy_bytes: int = BUSY_BYTES) -> None:
        self._busy_limit = busy_bytes
        self._busy = 0
        self._lines: dict[str, collections.deque[tuple[int, asyncio.Future[None]]]] = {}
        self._spent: dict[str, tuple[float, float]] = {}  # producer -> (validation seconds, as of), decayed
        self._held: dict[str, int] = {}  # requests under way, by key
        self._held_bytes = 0

    @contextlib.contextmanager
    def holding(self, producer: str) -> Iterator[Callable[[int], None]]:
        """Hold a place for a request of ``producer`` (429 past its key's requests); yields what
        to call with each part of its body as it arrives (503 past every key's bytes)."""
        if self._held.get(producer, 0) >= MAX_REQUESTS_PER_KEY:
            raise TooManyAtOnce("requests", MAX_REQUESTS_PER_KEY)
        self._held[producer] = self._held.get(producer, 0) + 1
        arrived = 0

        def take(size: int) -> None:
            nonlocal arrived
            if self._held_bytes + size > MAX_HELD_BYTES:
                raise OverloadedError("ingest holds as many request bodies as it may; retry later", 1)
            arrived += size
            self._held_bytes += size

        try:
            yield take
        finally:
            self._held_bytes -= arrived
            if self._held[producer] > 1:
                self._held[producer] -= 1
            else:
                del self._held[producer]

    def spent(self, producer: str, seconds: float) -> None:
        """Count ``seconds`` of validation against ``producer``'s next turns."""
        now = time.monotonic()
        self._spent[producer] = (self._spent_of(producer, now) + seconds, now)
        if len(self._spent) > 64:  # forget those that spent next to nothing lately
            self._spent = {p: (s, at) for p, (s, at) in self._spent.items() if self._spent_of(p, now) > 1e-3}

    def _spent_of(self, producer: str, now: float) -> float:
        seconds, at = self._spent.get(producer, (0.0, now))
        return float(seconds * 0.5 ** ((now - at) / SPENT_HALF_LIFE_S))

    @contextlib.asynccontextmanager
    async def turn(self, producer: str, size: int, gone: asyncio.Future[Any] | None = None) -> AsyncIterator[None]:
        """Wait for the turn of a body of ``size`` bytes of ``producer``; ClientGone if ``gone``
        (its client's disconnection) comes first."""
        if not self._lines and self._fits(size):
            self._busy += size
        else:
            await self._wait(producer, size, gone)
        try:
            yield
        finally:
            self._busy -= size
            self._admit()

    async def _wait(self, producer: str, size: int, gone: asyncio.Future[Any] | None) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines.setdefault(producer, collections.deque()).append((size, waiter))
        self._admit()
        try:
            if gone is not None and not waiter.done():
                await asyncio.wait([waiter, gone], return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    raise ClientGone
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._busy -= size  # its turn came as it was given up
                self._admit()
            else:
                waiter.cancel()
                self._drop(producer, waiter)
            raise

    def _fits(self, size: int) -> bool:
        return self._busy == 0 or self._busy + size <= self._busy_limit

    def _admit(self) -> None:
        """Start the head of the line of the key that spent least lately (of those equal, the
        one that waited longest), while it fits; one that does not fit waits for room, and the
        others with it (a large body is not passed for ever by smaller ones)."""
        while self._lines:
            now = time.monotonic()
            producer = min(self._lines, key=lambda p: self._spent_of(p, now))  # the first of equals
            line = self._lines.pop(producer)
            size, waiter = line[0]
            if not waiter.done():  # else given up: dropped
                if not self._fits(size):
                    self._lines = {producer: line, **self._lines}  # stays first
                    return
                self._busy += size
                waiter.set_result(None)
            line.popleft()
            if line:
                self._lines[producer] = line  # behind the others of its key's spending

    def _drop(self, producer: str, waiter: asyncio.Future[None]) -> None:
        line = self._lines.get(producer)
        if line is None:
            return
        kept = collections.deque(item for item in line if item[1] is not waiter)
        if kept:
            self._lines[producer] = kept
        else:
            del self._lines[producer]
        self._admit()
