"""``GET /v1/alerts/stream``: alert changes as server-sent events, for the dashboard.

A stream lives for hours, far past the one authorization of its request: its key or session
is checked again every ``RECHECK_S`` and before every send, and the stream ends (with a last
``event: closed``) once the key is revoked or the session signed out or expired, or as soon as
the server begins to stop (a browser's ``EventSource`` connects again by itself).

An open stream holds a connection for as long as it lives, so one key (with all its sessions)
may hold at most ``max_streams_per_key`` of them (:class:`StreamSlots`; 429 past it); a slot is
given back however the stream ends: revocation, the client leaving, or the server stopping.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ringfence.api.auth import authorize, platform_of, still_authorized
from ringfence.api.draining import draining_of, unless_stopping
from ringfence.api.platform import served
from ringfence.errors import OverloadedError, RequestError

HEARTBEAT_S = 15.0
RECHECK_S = 2.0
CLOSED = b'event: closed\ndata: {"reason": "the key was revoked or the session ended"}\n\n'
STOPPING = b'event: closed\ndata: {"reason": "the server is stopping"}\n\n'  # a browser reconnects


class StreamSlots:
    """How many live streams each key holds open, at most ``per_key``. Used only on the event
    loop's thread."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: Counter[str] = Counter()

    def held(self, key_id: str) -> int:
        return self._open[key_id]

    def acquire(self, key_id: str) -> Callable[[], None]:
        """Take one of ``key_id``'s slots (429 with Retry-After when all are taken); returns its
        release, which frees that slot once however often it is called."""
        if self._open[key_id] >= self.per_key:
            raise RequestError(
                429,
                "too_many_streams",
                f"this API key has {self.per_key} live streams open already; close one first",
                {"retry_after": max(1, round(RECHECK_S))},
            )
        self._open[key_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open[key_id] -= 1
                if self._open[key_id] <= 0:
                    del self._open[key_id]

        return release


class _LiveStream(StreamingResponse):
    """A streaming response that runs ``on_end`` however it ends, even when the client left
    before its first chunk (an async generator never started runs no ``finally``)."""

    def __init__(self, content: AsyncIterator[bytes], on_end: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_end()


def _drain(queue: asyncio.Queue[dict[str, Any]], first: dict[str, Any]) -> list[dict[str, Any]]:
    """``first`` and whatever else is already queued: sent together after one credential check."""
    batch = [first]
    while not queue.empty():
        batch.append(queue.get_nowait())
    return batch


async def alert_stream(request: Request) -> StreamingResponse:
    caller = authorize(request, "alerts:read")
    platform = platform_of(request)
    stream = served(platform.stream, platform, "the live alert stream")
    release = request.app.state.streams.acquire(caller.key_id)
    queue = stream.subscribe()
    draining = draining_of(request)

    def end() -> None:
        stream.unsubscribe(queue)
        release()

    async def events() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        last_sent = time.monotonic()
        while True:
            try:
                batch = _drain(queue, await unless_stopping(draining, queue.get(), RECHECK_S))
            except TimeoutError:
                batch = []
            except OverloadedError:  # the server stops
                yield STOPPING
                return
            if not await run_in_threadpool(still_authorized, request):
                yield CLOSED
                return
            visible = [e for e in batch if caller.sees(e["audience"])]
            if visible:
                yield b"".join(b"event: alert\ndata: " + msgspec.json.encode(e) + b"\n\n" for e in visible)
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent >= HEARTBEAT_S:
                yield b": ping\n\n"  # keeps proxies from closing an idle stream
                last_sent = time.monotonic()

    return _LiveStream(events(), on_end=end)
