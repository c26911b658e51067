"""A customer as analysts investigate them: current feature values (explainability) and
recent events read back from the log."""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.errors import json_response
from ringfence.api.params import limit_param, path_text
from ringfence.api.platform import served
from ringfence.clock import iso

EVENTS_SCANNED = 1_000_000  # how far back in the log a customer's events are looked for


async def customer_events(request: Request) -> Response:
    """The customer's newest events among the latest EVENTS_SCANNED in the log, newest first.
    Raw (masked) event data: only keys that see every audience may read it."""
    require_unrestricted(authorize(request, "alerts:read"))
    platform = platform_of(request)
    log = served(platform.log, platform, "reading events back")
    customer_id = path_text(request, "customer_id")
    limit = limit_param(request, 50, 500)
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
