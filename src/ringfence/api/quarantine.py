"""``/v1/quarantine``: events the engine or the state codec could not handle (admin only).

Listing shows where each event was and why it failed, never its body; a re-drive after a
pack fix hands the stored event back to the runtime (audited).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of, refuse_while_disk_low
from ringfence.api.errors import json_response
from ringfence.api.params import choice_params, cursor_param, limit_param, parse_int, path_id
from ringfence.api.platform import served
from ringfence.errors import NotFound
from ringfence.store.quarantine import STATUSES


async def list_quarantine(request: Request) -> Response:
    authorize(request, "admin")
    platform = platform_of(request)
    repo = served(platform.quarantine, platform, "the quarantine")
    status = choice_params(request, "status", STATUSES)
    limit = limit_param(request, 100, 1000)
    cursor = cursor_param(request)
    items, next_cursor = await run_in_threadpool(repo.entries, status[0] if status else None, limit, cursor)
    counts = await run_in_threadpool(repo.counts)
    return json_response(
        {
            "items": [e.to_dict() for e in items],
            "counts": counts,
            "next_cursor": str(next_cursor) if next_cursor is not None else None,
        }
    )


async def redrive(request: Request) -> Response:
    caller = authorize(request, "admin")
    refuse_while_disk_low(request)
    platform = platform_of(request)
    entry_id = parse_int(path_id(request, "entry_id"), 1, 2**62)
    if entry_id is None:
        raise NotFound("no such quarantined event")
    entry = await run_in_threadpool(platform.redrive_quarantined, entry_id, caller.actor)
    return json_response(entry.to_dict(), 202)
