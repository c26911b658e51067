"""Request bodies: read with a size limit (never buffered past it) and a deadline, JSON
decoded into a struct with an error that says what was expected.

A small body (at most :data:`SMALL_BODY`, like a sign-in's) must arrive as fast as a request
head (``request_head_timeout_s``); a larger one within ``request_timeout_s``. The HTTP server
itself also closes a connection whose body is late, and closes the oldest such first when it
runs out of connections (runtimes/http_server.py)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from ringfence.api.params import parse_int
from ringfence.errors import FieldError, RequestError
from ringfence.events.sensitive import scan

T = TypeVar("T")
SMALL_BODY = 16 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without buffering it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        size_declared = parse_int(declared, 0, 2**62)
        if size_declared is None:
            raise RequestError(400, "bad_request", "invalid Content-Length")
        if size_declared > limit:
            raise RequestError(413, "payload_too_large", f"body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    settings = request.app.state.platform.settings
    timeout = settings.request_head_timeout_s if limit <= SMALL_BODY else settings.request_timeout_s
    try:
        async with asyncio.timeout(timeout):  # a body trickling in byte by byte ties up nothing for long
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, "payload_too_large", f"body is larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, "request_timeout", f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:  # e.g. closed by the server to make room: nobody to answer, nothing to log
        raise RequestError(400, "client_disconnected", "the connection closed before the body arrived") from None
    return b"".join(chunks)


async def json_body(
    request: Request, kind: type[T], expected: str, limit: int = SMALL_BODY, *, optional: bool = False
) -> T:
    """The body decoded as ``kind`` (an empty body is ``kind()`` when ``optional``)."""
    raw = await read_body(request, limit)
    if optional and not raw.strip():
        return kind()
    try:
        value = msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid_body", f"expected {expected}: {exc}") from None
    return _storable(value, kind)


def _storable(value: T, kind: type[T]) -> T:
    """People's text (comments, reasons, silences, lists) is stored and shown like producers'
    data: no card number, no NUL or lone surrogate (which PostgreSQL or an encoder refuses), and
    account numbers (IBANs) masked, in the store and the audit trail alike."""
    errors: list[FieldError] = []
    plain = msgspec.to_builtins(value)
    masked = scan(plain, "", errors)
    if errors:
        details = {"errors": [{"field": e.field, "message": e.message} for e in errors[:20]]}
        fields = ", ".join(sorted({e.field or "body" for e in errors})[:5])
        raise RequestError(400, "invalid_body", f"the body cannot be stored as sent: see {fields}", details)
    if masked == plain:
        return value
    try:
        return msgspec.convert(masked, kind)
    except msgspec.ValidationError as exc:  # a masked value no longer fits its field's bounds
        raise RequestError(400, "invalid_body", f"the body cannot be stored once masked: {exc}") from None
