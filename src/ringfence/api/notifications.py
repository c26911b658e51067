"""The notification log: what was sent, what is pending, and dead letters to re-drive."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.errors import json_response
from ringfence.api.params import choice_params, cursor_param, limit_param, path_id
from ringfence.store.notifications import NotificationStore


async def list_notifications(request: Request) -> Response:
    require_unrestricted(authorize(request, "alerts:read"))
    platform = platform_of(request)
    status = choice_params(request, "status", ("pending", "sent", "dead"))
    limit = limit_param(request, 100, 1000)
    millis = cursor_param(request)
    cursor = millis / 1000 if millis is not None else None
    items = await run_in_threadpool(
        NotificationStore(platform.store).notifications, status[0] if status else None, limit + 1, cursor
    )
    more = len(items) > limit
    items = items[:limit]
    next_cursor = str(int(items[-1].created_at * 1000)) if more else None
    return json_response({"items": [n.to_dict() for n in items], "next_cursor": next_cursor})


async def redrive(request: Request) -> Response:
    key = authorize(request, "alerts:write")
    require_unrestricted(key)
    platform = platform_of(request)
    now = platform.clock.time()
    notification = await run_in_threadpool(
        NotificationStore(platform.store).redrive, path_id(request, "notification_id"), f"key:{key.name}", now
    )
    platform.dispatcher.wakeup.set()
    return json_response(notification.to_dict())
