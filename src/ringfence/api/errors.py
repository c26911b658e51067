"""JSON errors for every failure: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ringfence.errors import (
    AuthError,
    EventError,
    ForbiddenError,
    NotFound,
    NotSupported,
    OverloadedError,
    RequestError,
    StoreError,
    StoreUnavailable,
)
from ringfence.events.decode import MalformedBody
from ringfence.events.sensitive import redact

log = logging.getLogger("ringfence.api")
# a list in an error's details longer than this is fitted to echo on a thread: 10,000 events of 25
# unknown fields each, all rejected, took the event loop 1.2 s (a hostile test)
LONG_DETAILS = 100
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    501: "not_available",
    503: "unavailable",
}


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


PIECE_BYTES = 64 << 10


class SharedBody(Response):
    """An answer whose body many answers share (one bytes object, made once), sent a piece at a
    time: uvicorn lets the next piece go only once the client took enough of the last, so a
    client that does not read holds a piece, not a copy of the whole. A list of 100,000 values
    (5.6 MB) sent to 300 clients that read nothing took the server from 270 MB to 1 GB (a
    hostile test)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        body = memoryview(self.body)
        for start in range(0, len(body), PIECE_BYTES) or [0]:
            piece = bytes(body[start : start + PIECE_BYTES])
            await send({"type": "http.response.body", "body": piece, "more_body": start + PIECE_BYTES < len(body)})
        if self.background is not None:
            await self.background()


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> Response:
    """An error answer; its text is echoed only with any card number starred out and IBAN
    masked (a path's id, a body's unknown field, a header may quote what a caller typed)."""
    error = {"code": code, "message": redact(message), "details": _fit_to_echo(details)}
    return json_response({"error": error}, status, headers)


def _long(details: Any) -> bool:
    """Details listing many entries (each event's rejections): echoed off the event loop."""
    return isinstance(details, dict) and any(isinstance(v, list) and len(v) > LONG_DETAILS for v in details.values())


def _fit_to_echo(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _fit_to_echo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fit_to_echo(v) for v in value]
    return value


async def handle_error(request: Request, exc: Exception) -> Response:
    """Map Ringfence's exceptions to HTTP statuses; never leak internals on a 500."""
    if isinstance(exc, RequestError):
        retry = exc.details.get("retry_after") if isinstance(exc.details, dict) else None
        headers = {"Retry-After": str(retry)} if exc.status in (429, 503) and retry is not None else None
        if _long(exc.details):
            return await run_in_threadpool(error_response, exc.status, exc.code, str(exc), exc.details, headers)
        return error_response(exc.status, exc.code, str(exc), exc.details, headers)
    if isinstance(exc, ForbiddenError):
        return error_response(403, "forbidden", str(exc), {"required_scope": exc.scope})
    if isinstance(exc, AuthError):
        return error_response(401, "unauthorized", str(exc), None, {"WWW-Authenticate": 'Bearer realm="ringfence"'})
    if isinstance(exc, MalformedBody | EventError):
        code = "malformed_body" if isinstance(exc, MalformedBody) else "invalid_events"
        details = {"errors": [e.to_dict() for e in exc.errors]}
        if _long(details):
            return await run_in_threadpool(error_response, 400, code, str(exc), details)
        return error_response(400, code, str(exc), details)
    if isinstance(exc, OverloadedError):
        return error_response(503, "overloaded", str(exc), None, {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, NotSupported):
        return error_response(501, "not_available", str(exc))
    if isinstance(exc, NotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, StoreUnavailable):  # a file gone under the server: not the request's fault
        return error_response(503, "unavailable", str(exc), None, {"Retry-After": "5"})
    if isinstance(exc, StoreError):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, HTTPException):  # e.g. 405, which must keep its Allow header
        return error_response(
            exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), str(exc.detail), None, exc.headers
        )
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")
