"""A request that may outlast the server's stop: live streams and back-tests.

When the server stops, it gives the requests under way a grace period, then cancels what is
left, and uvicorn answers a cancelled request 500 (or cuts its stream short, logged as an
error). So a request that waits on something long ends as soon as the stop begins
(:func:`ringfence.api.app.begin_draining`): 503, or a last line of its stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from ringfence.errors import OverloadedError

T = TypeVar("T")

RETRY_AFTER_S = 5  # about as long as a restart takes


def stopping_error() -> OverloadedError:
    return OverloadedError("the server is stopping; retry", RETRY_AFTER_S)


def draining_of(request: Request) -> asyncio.Event:
    """Set once the server serving ``request`` begins to stop."""
    draining: asyncio.Event = request.app.state.draining
    return draining


async def unless_stopping(draining: asyncio.Event, work: Awaitable[T], timeout_s: float | None = None) -> T:
    """``work``'s result; OverloadedError (503) if ``draining`` is set first (``work`` is
    cancelled), TimeoutError after ``timeout_s``."""
    if draining.is_set():
        close = getattr(work, "close", None)  # a coroutine or anext()'s awaitable, never started
        if callable(close):
            close()
        raise stopping_error()
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(draining.wait())
    try:
        await asyncio.wait({task, stop}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    await asyncio.gather(task, return_exceptions=True)  # let it finish its cancellation
    if draining.is_set():
        raise stopping_error()
    raise TimeoutError
