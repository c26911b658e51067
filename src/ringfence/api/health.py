"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import sqlite3
from importlib import resources

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of, require_unrestricted
from ringfence.api.errors import SharedBody, json_response
from ringfence.api.platform import served
from ringfence.errors import StoreError

OPENAPI = resources.files("ringfence.api").joinpath("openapi.json").read_bytes()


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    authorize(request, None)
    platform = platform_of(request)
    log = served(platform.log, platform, "readiness")
    try:
        log.check()  # its files deleted under the server: it takes no events
        reason = platform.unready_reason()
        body = {
            "ready": platform.ready and reason is None,
            "log_head": log.head(),
            "processed_offset": platform.processed_offset(),
            "lag_events": platform.lag(),
            "rule_pack_version": platform.pack.version,
        }
    except (StoreError, sqlite3.Error, OSError) as exc:  # the log or the store failed: not ready
        return json_response({"ready": False, "rule_pack_version": platform.pack.version, "reason": str(exc)}, 503)
    if reason is not None:
        body["reason"] = reason
    return json_response(body, 200 if body["ready"] else 503)


async def metrics(request: Request) -> Response:
    require_unrestricted(authorize(request, "alerts:read"))  # alerts and rule hits of every desk
    platform = platform_of(request)
    return Response(served(platform.metrics, platform, "metrics").render(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    authorize(request, None)
    return SharedBody(OPENAPI, media_type="application/json")
