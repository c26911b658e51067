"""``GET /v1/events/late``: events that arrived behind their partition's watermark."""

from __future__ import annotations

import dataclasses

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.errors import json_response
from ringfence.api.params import cursor_param, limit_param
from ringfence.api.platform import served
from ringfence.clock import iso


async def list_late_events(request: Request) -> Response:
    """Late events name customers of every desk: only keys that see every audience may list them."""
    require_unrestricted(authorize(request, "alerts:read"))
    platform = platform_of(request)
    records = served(platform.records, platform, "the late events")
    limit = limit_param(request, 100, 1000)
    cursor = cursor_param(request)
    items, next_cursor = await run_in_threadpool(records.list_late_events, limit, cursor)
    total = await run_in_threadpool(records.count_late_events)
    body = [
        {
            **dataclasses.asdict(e),
            "occurred_at": iso(e.occurred_at),
            "watermark": iso(e.watermark),
            "ingested_at": iso(e.ingested_at),
        }
        for e in items
    ]
    return json_response({"items": body, "total": total, "next_cursor": str(next_cursor) if next_cursor else None})
