"""Browser sign-in: an API key (a person's role key) becomes an HttpOnly, Secure,
SameSite=Strict session cookie; every state change must also carry its CSRF token."""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import SESSION_COOKIE, authorize, platform_of
from ringfence.api.bodies import json_body
from ringfence.api.errors import json_response
from ringfence.clock import iso
from ringfence.errors import AuthError
from ringfence.store.keys import SESSION_TTL_S, Session


class _SignIn(msgspec.Struct, forbid_unknown_fields=True):
    key: str


def _describe(session: Session) -> dict[str, object]:
    return {
        "name": session.key.name,
        "scopes": list(session.key.scopes),
        "audiences": list(session.key.audiences),
        "csrf_token": session.csrf,
        "expires_at": iso(session.expires_at),
    }


async def current_session(request: Request) -> Response:
    """The signed-in session, with its CSRF token for a page that was (re)loaded. CORS is not
    enabled, so only pages of this origin can read it."""
    authorize(request, None)
    platform = platform_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or request.headers.get("authorization"):
        raise AuthError("not signed in: this reads a browser session, not an API key")
    session = await run_in_threadpool(platform.keys.session, cookie, platform.clock.time())
    return json_response(_describe(session))


async def sign_in(request: Request) -> Response:
    platform = platform_of(request)
    body = await json_body(request, _SignIn, '{"key": "rf_..."}')
    now = platform.clock.time()
    try:
        session_id, session = await run_in_threadpool(platform.keys.create_session, body.key, now)
    except AuthError:
        client = request.client.host if request.client else "unknown"
        request.app.state.limits.failures.check(client, "too many failed sign-ins from this address")
        raise
    response = json_response(_describe(session), status=201)
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=int(SESSION_TTL_S), path="/", secure=True, httponly=True, samesite="strict"
    )
    return response


async def sign_out(request: Request) -> Response:
    authorize(request, None)
    platform = platform_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await run_in_threadpool(platform.keys.end_session, cookie, platform.clock.time())
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
