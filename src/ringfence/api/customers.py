"""A customer as analysts investigate them: current feature values (explainability) and
recent events read back from the log."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.errors import json_response
from ringfence.api.params import int_param
from ringfence.clock import iso
from ringfence.errors import RequestError

RETRIES = 5
EVENTS_SCANNED = 1_000_000  # how far back in the log a customer's events are looked for


def _customer_id(request: Request) -> str:
    customer_id: str = request.path_params["customer_id"]
    if not 1 <= len(customer_id) <= 128:
        raise RequestError(400, "invalid_path", "customer id must be 1..128 characters")
    return customer_id


async def customer_events(request: Request) -> Response:
    """The customer's newest events among the latest EVENTS_SCANNED in the log, newest first.
    Raw (masked) event data: only keys that see every audience may read it."""
    require_unrestricted(authorize(request, "alerts:read"))
    platform = platform_of(request)
    customer_id = _customer_id(request)
    limit = int_param(request, "limit", 50, 1, 500) or 50
    records, lowest = await run_in_threadpool(platform.log.recent_of_customer, customer_id, limit, EVENTS_SCANNED)
    items = [
        {"offset": r.offset, "ingested_at": iso(r.ingested_at), "event": msgspec.json.decode(r.body)} for r in records
    ]
    return json_response({"customer_id": customer_id, "items": items, "searched_from_offset": lowest})


async def customer_features(request: Request) -> Response:
    authorize(request, "alerts:read")
    platform = platform_of(request)
    customer_id = _customer_id(request)
    if platform.runtime != "embedded":
        raise RequestError(501, "not_available", "feature values live in the process workers in the kafka runtime")
    engine = platform.engine
    latest = max(engine.max_event_time.values(), default=-math.inf)
    at = latest if math.isfinite(latest) else platform.clock.time()
    features: dict[str, Any] = {}
    for _ in range(RETRIES):  # the processor thread may resize a state while it is read
        try:
            features = engine.features_of({"customer_id": customer_id}, at)
            break
        except RuntimeError:
            continue
    return json_response({"customer_id": customer_id, "at": iso(at), "features": features})
