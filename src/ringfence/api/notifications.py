"""The notification log: what was sent, what is pending, and dead letters to re-drive."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.alerts.model import NotificationStatus
from ringfence.api.auth import (
    CHANGE_BYTES,
    authorize,
    change_charged,
    platform_of,
    refuse_while_disk_low,
    require_unrestricted,
    shown_after_change,
)
from ringfence.api.errors import json_response
from ringfence.api.params import choice_params, limit_param, path_id, token_param
from ringfence.errors import NotFound


async def list_notifications(request: Request) -> Response:
    require_unrestricted(authorize(request, "alerts:read"))
    platform = platform_of(request)
    status = choice_params(request, "status", tuple(NotificationStatus))
    limit = limit_param(request, 100, 1000)
    items, next_cursor = await run_in_threadpool(
        platform.notifications.notifications, status[0] if status else None, limit, token_param(request)
    )
    return json_response({"items": [n.to_dict() for n in items], "next_cursor": next_cursor})


async def redrive(request: Request) -> Response:
    caller = authorize(request, "alerts:write")
    require_unrestricted(caller)
    platform = platform_of(request)
    now = platform.clock.time()
    notification_id = path_id(request, "notification_id")
    refuse_while_disk_low(request)  # before the letter is looked up, as every change
    letter = await run_in_threadpool(platform.notifications.notification, notification_id)
    if letter is None or letter.status is not NotificationStatus.DEAD:
        raise NotFound(f"no dead letter {notification_id!r}")
    # an audit entry and the notification's row, as any change, and a history entry in each of its
    # alerts if it dies again: a key re-driving a letter of 500 alerts to a receiver refusing it,
    # each time it died, grew the store 12 GB an hour and sent the receiver 15 bodies of 184 KB a
    # second (a hostile test). Charged whole before: charged after, re-drives at once each passed
    # the check of their first KiB before any was charged the rest.
    more = CHANGE_BYTES * len(letter.payload.get("alerts", ()))
    async with change_charged(request, caller, more=more):
        notification = await run_in_threadpool(platform.notifications.redrive, notification_id, caller.actor, now)
    platform.notification_redriven()
    shown = notification.to_dict()  # its receiver's last error may quote an alert
    return json_response(shown_after_change(caller, shown, {"id": shown["id"], "status": shown["status"]}))
