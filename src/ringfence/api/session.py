"""Browser sign-in: an API key (a person's role key) becomes an HttpOnly, Secure,
SameSite=Strict session cookie; every state change must also carry its CSRF token.

A sign-in is taken only as JSON from this site's own pages: another site's form (sent as
``text/plain``, whose body can be made to read as JSON) is a top-level navigation, whose cookie
the browser keeps even SameSite=Strict, so it could sign a victim's browser in as the
attacker's key (login CSRF): their desks' alerts hidden, their actions in the attacker's name.
A form cannot send ``application/json`` and another site's script cannot without CORS, which is
not enabled; browsers also say where a request comes from (``Sec-Fetch-Site``).

Sign-in attempts, failed or not, are limited per client address (``signin_attempts_per_min``),
and sign-ins per key, counted once its secret is verified, so sessions cannot be minted in bulk.
Failures are not counted against the key they name: a key's id is public (the start of the key,
the audit trail), and anyone could lock its owner out by naming it with wrong secrets (found by a
pen test). Guessing a secret of 256 random bits from many addresses gains nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import SESSION_COOKIE, authenticator_of, authorize, client_address
from ringfence.api.bodies import media_type, secret_body
from ringfence.api.errors import json_response
from ringfence.clock import iso
from ringfence.errors import AuthError, RequestError
from ringfence.store.keys import SESSION_TTL_S, Session

SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # none: a request the user made (no page)


class _SignIn(msgspec.Struct, forbid_unknown_fields=True):
    key: str


def _limit_address(request: Request) -> None:
    """Spend one sign-in attempt of the client's address (429 when out). Charged before the
    body is read, so an anonymous client cannot hold connections open with slow bodies at will,
    and before the key's, so one address cannot spend more of a key's attempts than its own."""
    buckets = request.app.state.limits.signin
    buckets.check(f"address:{client_address(request)}", "too many sign-in attempts from this address")


def _key_limit(request: Request) -> Callable[[str], None]:
    """What spends one sign-in of a key whose secret was verified (429 when out)."""
    buckets = request.app.state.limits.signin

    def admit(key_id: str) -> None:
        buckets.check(f"key:{key_id}", "too many sign-ins with this key")

    return admit


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
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or request.headers.get("authorization"):
        raise AuthError("not signed in: this reads a browser session, not an API key")
    session = await run_in_threadpool(authenticator_of(request).session, cookie)
    return json_response(_describe(session))


def _refuse_cross_site(request: Request) -> None:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE_FETCHES:
        raise RequestError(403, "cross_site", "sign in from this dashboard's own sign-in page")
    media = media_type(request)
    if media != "application/json":
        raise RequestError(
            415, "unsupported_media_type", "send application/json", {"content_type": media[:100] or None}
        )


async def sign_in(request: Request) -> Response:
    _refuse_cross_site(request)
    _limit_address(request)
    body = await secret_body(request, _SignIn, '{"key": "rf_..."}')
    try:
        session_id, session = await run_in_threadpool(authenticator_of(request).sign_in, body.key, _key_limit(request))
    except AuthError:
        request.app.state.limits.failures.check(client_address(request), "too many failed sign-ins from this address")
        raise
    response = json_response(_describe(session), status=201)
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=int(SESSION_TTL_S), path="/", secure=True, httponly=True, samesite="strict"
    )
    return response


async def sign_out(request: Request) -> Response:
    authorize(request, None)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await run_in_threadpool(authenticator_of(request).sign_out, cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
