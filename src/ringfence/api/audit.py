"""``GET /v1/audit``: the audit trail of key, rule pack, list and alert changes (admin only)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of
from ringfence.api.errors import json_response
from ringfence.api.params import cursor_param, limit_param
from ringfence.api.platform import served


async def list_audit(request: Request) -> Response:
    authorize(request, "admin")
    platform = platform_of(request)
    records = served(platform.records, platform, "the audit trail")
    limit = limit_param(request, 100, 1000)
    cursor = cursor_param(request)
    items, next_cursor = await run_in_threadpool(records.list_audit, limit, cursor)
    return json_response({"items": items, "next_cursor": str(next_cursor) if next_cursor else None})
