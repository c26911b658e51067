"""A customer as analysts investigate them: current feature values (explainability) and
recent events read back from the log."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.errors import json_response
from ringfence.api.params import limit_param, path_text
from ringfence.api.platform import served
from ringfence.clock import iso
from ringfence.errors import RequestError

EVENTS_SCANNED = 1_000_000  # how far back in the log a customer's events are looked for


class Searches:
    """The keys whose search of the log is under way: one each at a time (429 to a second), so
    that one key looping over customers who are not there holds one of the log's scanners, never
    all of them. Used only on the event loop's thread."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    @contextlib.contextmanager
    def one_of(self, key_id: str) -> Iterator[None]:
        if key_id in self._keys:
            message = "this API key has a search of the log under way; wait for its answer"
            raise RequestError(429, "too_many_searches", message, {"retry_after": 1})
        self._keys.add(key_id)
        try:
            yield
        finally:
            self._keys.discard(key_id)


async def customer_events(request: Request) -> Response:
    """The customer's newest events among the latest EVENTS_SCANNED in the log, newest first.
    Raw (masked) event data: only keys that see every audience may read it."""
    caller = authorize(request, "alerts:read")
    require_unrestricted(caller)
    platform = platform_of(request)
    log = served(platform.log, platform, "reading events back")
    customer_id = path_text(request, "customer_id")
    limit = limit_param(request, 50, 500)
    with request.app.state.searches.one_of(caller.key_id):
        records, lowest = await run_in_threadpool(log.recent_of_customer, customer_id, limit, EVENTS_SCANNED)
    items = [
        {"offset": r.offset, "ingested_at": iso(r.ingested_at), "event": msgspec.json.decode(r.body)} for r in records
    ]
    return json_response({"customer_id": customer_id, "items": items, "searched_from_offset": lowest})


async def customer_features(request: Request) -> Response:
    """The customer's current feature values: derived from raw event data, so, like the events,
    only for keys that see every audience."""
    require_unrestricted(authorize(request, "alerts:read"))
    platform = platform_of(request)
    customer_id = path_text(request, "customer_id")
    at, features = await run_in_threadpool(platform.customer_features, customer_id)  # the kafka runtime asks a worker
    return json_response({"customer_id": customer_id, "at": iso(at), "features": features})
