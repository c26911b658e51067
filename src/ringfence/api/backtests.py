"""``POST /v1/rules/backtest``: replay the latest stored events through the live pack and a
candidate, as the platform runs it (the embedded and kafka runtimes: in a child process; aws: 501).

Bounded like any other work a key can start: one running back-test per key and
:data:`MAX_RUNNING` in all (429 with Retry-After otherwise), a time budget
(``backtest_time_budget_s``; when spent, the answer holds the hits so far with
``truncated: true``; the platform stops the run shortly after whatever the client does, and
its slot is freed only once the run is gone), and only for keys that see every
audience (403 otherwise: probe rules would reveal other desks' customers).
``Accept: application/x-ndjson`` streams progress lines and then the result, each write to the
client bounded by :data:`WRITE_TIMEOUT_S`; other clients get the result as one JSON object.
A back-test under way when the server begins to stop ends then: 503 ``overloaded``, or a last
line ``{"error": {"code": "overloaded"}}`` of its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Send

from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.draining import draining_of, unless_stopping
from ringfence.api.errors import json_response
from ringfence.api.params import int_param
from ringfence.api.platform import BacktestRun
from ringfence.api.rules import read_candidate
from ringfence.clock import Clock
from ringfence.errors import ForbiddenError, OverloadedError, RequestError

log = logging.getLogger("ringfence.api")

MAX_RUNNING = 2  # back-tests at once, all keys together: the processor keeps a core
WRITE_TIMEOUT_S = 30.0  # the longest a streamed back-test waits for a client to take a line
NDJSON = "application/x-ndjson"
_ERROR_STATUS = {"backtest_too_large": 422}


class BacktestSlots:
    """Who runs a back-test now: one per key, ``limit`` in all.

    A slot is freed only by its release, which the platform calls once the back-test is gone
    (the ``on_exit`` of :meth:`~ringfence.api.platform.Platform.backtest`); the platform's own
    time limit bounds when that is. So a slot never lapses while its run lives, and a key can
    never have two runs at once. Used only on the event loop's thread.
    """

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._held: dict[str, tuple[float, object]] = {}  # key id -> (when it should end, its holder)

    def check(self, key_id: str) -> None:
        """Raise 429 with Retry-After if ``key_id`` could not start a back-test now."""
        now = self._clock.time()
        if key_id in self._held:
            self._busy("this API key is running a back-test already", self._held[key_id][0] - now)
        if len(self._held) >= self.limit:
            self._busy(f"{self.limit} back-tests are running", min(t for t, _ in self._held.values()) - now)

    def acquire(self, key_id: str, expected_s: float) -> Callable[[], None]:
        """Take ``key_id``'s slot until released (``expected_s`` only sets Retry-After), or
        raise as :meth:`check` does.

        Returns the release, which frees this slot only (not a later one of the same key).
        """
        self.check(key_id)
        holder = object()
        self._held[key_id] = (self._clock.time() + expected_s, holder)

        def release() -> None:
            if self._held.get(key_id, (0.0, None))[1] is holder:
                del self._held[key_id]

        return release

    @staticmethod
    def _busy(message: str, wait_s: float) -> None:
        raise RequestError(429, "backtest_running", message, {"retry_after": max(1, math.ceil(wait_s))})


def _error(message: dict[str, Any]) -> RequestError:
    code = str(message["error"].get("code", "backtest_failed"))
    return RequestError(_ERROR_STATUS.get(code, 500), code, str(message["error"].get("message", "")))


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body was read: nothing else can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _result(run: BacktestRun, request: Request) -> Response:
    """The one JSON answer for clients that do not stream; stops the run as soon as the client leaves."""
    lines = run.answers()
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        while True:
            line = asyncio.ensure_future(unless_stopping(draining_of(request), anext(lines)))  # 503 as the server stops
            await asyncio.wait({line, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not line.done():
                line.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await line
                return Response(status_code=204)  # nobody to answer
            try:
                message = line.result()
            except StopAsyncIteration:
                raise RequestError(500, "backtest_failed", "the back-test ended without a result") from None
            if "result" in message:
                return json_response(message["result"])
            if "error" in message:
                raise _error(message)
    finally:
        gone.cancel()
        await lines.aclose()


class BacktestStream(StreamingResponse):
    """NDJSON: ``{"progress": …}`` lines, then ``{"result": …}`` or ``{"error": …}``.

    Every write to the client is bounded by :data:`WRITE_TIMEOUT_S`: a client that stops
    reading gets its response abandoned (and its connection closed), not a task waiting for
    ever. The run is stopped when the response ends, however it ends; the platform's own time
    limit covers a response that never starts.
    """

    def __init__(self, run: BacktestRun, draining: asyncio.Event) -> None:
        super().__init__(self._chunks(run, draining), media_type=NDJSON)
        self._run = run

    @staticmethod
    async def _chunks(run: BacktestRun, draining: asyncio.Event) -> AsyncIterator[bytes]:
        answers = run.answers()
        while True:
            try:
                message = await unless_stopping(draining, anext(answers))
            except StopAsyncIteration:
                break
            except OverloadedError as exc:  # the server stops: the run's last line says so
                message = {"error": {"code": "overloaded", "message": str(exc)}}
            yield msgspec.json.encode(message) + b"\n"
            if "error" in message or "result" in message:
                break
        await run.stop()  # the response ends once the run is gone and the slot free again

    async def stream_response(self, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            await asyncio.wait_for(send(message), WRITE_TIMEOUT_S)

        try:
            await super().stream_response(bounded_send)
        except TimeoutError:
            log.warning("abandoned a back-test stream: the client read nothing for %g s", WRITE_TIMEOUT_S)
        finally:
            self._run.kill()  # its exit frees the slot


async def backtest_rules(request: Request) -> Response:
    caller = authorize(request, "rules:read")
    # the hit counts of probe rules tell what stored events hold: a key that may read them, of
    # every audience (as /v1/customers/{id}/events), and each run audited
    if not caller.allows("alerts:read"):
        raise ForbiddenError("alerts:read")
    require_unrestricted(caller)
    platform = platform_of(request)
    limit = int_param(request, "limit", 100_000, 1, 1_000_000) or 100_000
    slots: BacktestSlots = request.app.state.backtests
    slots.check(caller.key_id)  # before reading and checking the candidate: a refusal costs nothing
    candidate = await read_candidate(request, caller)
    release = slots.acquire(caller.key_id, platform.settings.backtest_time_budget_s)
    try:  # from here on, only the run's end frees the slot
        run = await platform.backtest(candidate, limit, caller.actor, on_exit=release)
    except BaseException:
        release()  # nothing runs (a second call after its end is harmless)
        raise
    if NDJSON in request.headers.get("accept", ""):
        return BacktestStream(run, draining_of(request))
    try:
        return await _result(run, request)
    finally:
        await run.stop()
