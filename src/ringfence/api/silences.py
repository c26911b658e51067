"""Silences: mute alerts matching label matchers for a time range (audited).

Silences act on every desk's alerts and their matchers name customers, so listing, creating and
expiring them all need a key that sees every audience (403 for an audience-limited key)."""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.alerts.silences import SilenceError, check_silence
from ringfence.api.auth import authorize, change_charged, platform_of, require_unrestricted, shown_after_change
from ringfence.api.bodies import json_body
from ringfence.api.errors import json_response
from ringfence.api.params import limit_param, parse_time, path_id, token_param
from ringfence.errors import RequestError

MAX_PAGE = 100  # silences a page: some 2 MB of the largest, within Lambda's 6 MB answer


class _SilenceBody(msgspec.Struct, forbid_unknown_fields=True):
    matchers: list[str]
    ends_at: str
    comment: str
    starts_at: str | None = None


def _time(text: str, name: str) -> float:
    value = parse_time(text)
    if value is None:
        raise RequestError(400, "invalid_body", f"{name} must be an RFC 3339 time with offset")
    return value


async def list_silences(request: Request) -> Response:
    require_unrestricted(authorize(request, "alerts:read"))
    platform = platform_of(request)
    limit, cursor, now = limit_param(request, MAX_PAGE, MAX_PAGE), token_param(request), platform.clock.time()
    silences, next_cursor = await run_in_threadpool(platform.silences.silences, limit, cursor, now)
    return json_response({"items": [s.to_dict(now) for s in silences], "next_cursor": next_cursor})


async def create_silence(request: Request) -> Response:
    caller = authorize(request, "alerts:write")
    require_unrestricted(caller)
    platform = platform_of(request)
    body = await json_body(
        request, _SilenceBody, "{matchers, ends_at, comment[, starts_at]}", 64 * 1024, prose=("comment",)
    )
    now = platform.clock.time()
    starts = _time(body.starts_at, "starts_at") if body.starts_at else now
    ends = _time(body.ends_at, "ends_at")
    try:
        check_silence(body.matchers, starts, ends, body.comment, now)
    except SilenceError as exc:
        raise RequestError(400, "invalid_body", str(exc)) from None
    async with change_charged(request, caller, *body.matchers, body.comment):  # in its row and the audit entry
        silence = await run_in_threadpool(
            platform.silences.create_silence, body.matchers, starts, ends, caller.actor, body.comment, now
        )
    return json_response(silence.to_dict(now), status=201)


async def delete_silence(request: Request) -> Response:
    caller = authorize(request, "alerts:write")
    require_unrestricted(caller)
    silence_id = path_id(request, "silence_id")
    platform = platform_of(request)
    now = platform.clock.time()
    async with change_charged(request, caller):
        silence = await run_in_threadpool(platform.silences.expire_silence, silence_id, caller.actor, now)
    shown = silence.to_dict(now)
    return json_response(shown_after_change(caller, shown, {"id": shown["id"], "state": shown["state"]}))
