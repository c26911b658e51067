"""Silences: mute alerts matching label matchers for a time range (audited)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.alerts.matchers import MatcherError
from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.bodies import json_body
from ringfence.api.errors import json_response
from ringfence.errors import RequestError, StoreError
from ringfence.store.notifications import NotificationStore

MAX_SILENCE_S = 366 * 86400.0


class _SilenceBody(msgspec.Struct, forbid_unknown_fields=True):
    matchers: list[str]
    ends_at: str
    comment: str
    starts_at: str | None = None


def _time(text: str, name: str) -> float:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise RequestError(400, "invalid_body", f"{name} must be an RFC 3339 time with offset")
    return value.timestamp()


async def list_silences(request: Request) -> Response:
    authorize(request, "alerts:read")
    platform = platform_of(request)
    now = platform.clock.time()
    silences = await run_in_threadpool(NotificationStore(platform.store).silences)
    return json_response({"items": [s.to_dict(now) for s in silences], "next_cursor": None})


async def create_silence(request: Request) -> Response:
    key = authorize(request, "alerts:write")
    require_unrestricted(key)
    platform = platform_of(request)
    body = await json_body(request, _SilenceBody, "{matchers, ends_at, comment[, starts_at]}", 64 * 1024)
    now = platform.clock.time()
    starts = _time(body.starts_at, "starts_at") if body.starts_at else now
    ends = _time(body.ends_at, "ends_at")
    if not body.comment.strip() or len(body.comment) > 1_000:
        raise RequestError(400, "invalid_body", "comment must say why (1..1000 characters)")
    if ends - starts > MAX_SILENCE_S or len(body.matchers) > 20:
        raise RequestError(400, "invalid_body", "a silence lasts at most a year and has at most 20 matchers")
    try:
        silence = await run_in_threadpool(
            NotificationStore(platform.store).create_silence,
            body.matchers,
            starts,
            ends,
            f"key:{key.name}",
            body.comment,
            now,
        )
    except (MatcherError, StoreError) as exc:
        raise RequestError(400, "invalid_body", str(exc)) from None
    return json_response(silence.to_dict(now), status=201)


async def delete_silence(request: Request) -> Response:
    key = authorize(request, "alerts:write")
    require_unrestricted(key)
    platform = platform_of(request)
    now = platform.clock.time()
    silence = await run_in_threadpool(
        NotificationStore(platform.store).expire_silence, request.path_params["silence_id"], f"key:{key.name}", now
    )
    return json_response(silence.to_dict(now))
