"""Request bodies: read with a size limit (never buffered past it) and a deadline, JSON
decoded into a struct with an error that says what was expected.

A small body (at most :data:`SMALL_BODY`, like a sign-in's) must arrive as fast as a request
head (``request_head_timeout_s``); a larger one within ``request_timeout_s``. The HTTP server
itself also closes a connection whose body is late, and closes the oldest such first when it
runs out of connections (runtimes/http_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from ringfence.api.params import parse_int
from ringfence.errors import FieldError, RequestError
from ringfence.events.sensitive import scan

T = TypeVar("T")
SMALL_BODY = 16 * 1024
ACCOUNT_NUMBER_REFUSED = (
    "holds an account number (IBAN): events hold them masked, so it would stand for every account "
    "of that country ending alike; give its masked form (e.g. DE****************3000)"
)


def media_type(request: Request) -> str:
    """The request's Content-Type without its parameters, lower case ('' when none)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int, take: Callable[[int], None] | None = None) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without buffering it;
    ``take`` is told the size of each part as it arrives (and may refuse it by raising)."""
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
                if take is not None:
                    take(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, "request_timeout", f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:  # e.g. closed by the server to make room: nobody to answer, nothing to log
        raise RequestError(400, "client_disconnected", "the connection closed before the body arrived") from None
    return b"".join(chunks)


async def json_body(
    request: Request,
    kind: type[T],
    expected: str,
    limit: int = SMALL_BODY,
    *,
    optional: bool = False,
    prose: tuple[str, ...] = (),
) -> T:
    """The body decoded as ``kind`` (an empty body is ``kind()`` when ``optional``), checked to
    be storable (:func:`storable`; ``prose``: its fields of people's free text)."""
    value = await secret_body(request, kind, expected, limit, optional=optional)
    return storable(value, kind, prose)


async def secret_body(
    request: Request, kind: type[T], expected: str, limit: int = SMALL_BODY, *, optional: bool = False
) -> T:
    """The body decoded as ``kind``, not scanned: for what is never stored (a key at sign-in,
    whose random characters may read as an account number)."""
    raw = await read_body(request, limit)
    if optional and not raw.strip():
        return kind()
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid_body", f"expected {expected}: {exc}") from None


def storable(value: T, kind: type[T], prose: tuple[str, ...] = ()) -> T:
    """People's text is stored and shown like producers' data: no card number, no NUL or lone
    surrogate (which PostgreSQL or an encoder refuses). An account number (IBAN) in a field of
    free text (``prose``: a comment, a reason) is masked, in the store and the audit trail
    alike; anywhere else (a matcher, a list value, an assignee) it is refused, since masked it
    would mean another thing (a matcher or a list entry matching every account with the same
    country and last four characters, two entries merged into one)."""
    errors: list[FieldError] = []
    plain = msgspec.to_builtins(value)
    masked = scan(plain, "", errors)
    if isinstance(plain, dict):
        for name, sent in plain.items():
            if name not in prose and masked[name] != sent:
                errors.append(FieldError(name, ACCOUNT_NUMBER_REFUSED))
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
