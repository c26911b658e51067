"""Bearer API-key authentication and scope checks for every endpoint but /healthz."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Union

from starlette.requests import Request

from ringfence.errors import AuthError, ForbiddenError, NotFound
from ringfence.runtimes.embedded.platform import Platform
from ringfence.store.keys import ApiKeys, KeyInfo, Session

if TYPE_CHECKING:
    from ringfence.runtimes.kafka.platform import KafkaPlatform


AnyPlatform = Union[Platform, "KafkaPlatform"]  # the embedded runtime's, or the kafka runtime's API services


def platform_of(request: Request) -> AnyPlatform:
    platform: AnyPlatform = request.app.state.platform
    return platform


SESSION_COOKIE = "rf_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _identify(request: Request) -> tuple[KeyInfo, Session | None]:
    """The key behind the request's credentials as they stand now (and its session, if a
    cookie was used). Raises AuthError if missing, unknown, revoked, expired or signed out."""
    platform = platform_of(request)
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    cookie = request.cookies.get(SESSION_COOKIE)
    if kind.lower() == "bearer" and token.strip():
        return platform.keys.authenticate(token.strip(), platform.clock.time()), None
    if not header and cookie:
        session = platform.keys.session(cookie, platform.clock.time())
        return session.key, session
    raise AuthError("missing API key: send 'Authorization: Bearer <key>' or sign in")


def authorize(request: Request, scope: str | None) -> KeyInfo:
    """The caller's key, from ``Authorization: Bearer`` or a signed-in session cookie, checked
    for ``scope`` (None: any valid key), CSRF (a session's state changes) and its rate limit.

    Raises AuthError (401/403) or a 429 RequestError.
    """
    limits = request.app.state.limits
    try:
        key, session = _identify(request)
        if session is not None and request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                raise ForbiddenError("csrf")
    except ForbiddenError:
        raise
    except AuthError:
        limits.failures.check(client_address(request), "too many failed authentications from this address")
        raise
    limits.per_key.check(key.key_id, "this API key is over its rate limit")
    if scope is not None:
        ApiKeys.require(key, scope)
    request.state.actor = f"key:{key.name}"
    return key


def still_authorized(request: Request) -> bool:
    """Whether the credentials of a long-lived response (a stream) still hold: its key not
    revoked, its session not signed out nor expired. Blocking (a store read): call off the loop."""
    try:
        _identify(request)
    except AuthError:
        return False
    return True


def client_address(request: Request) -> str:
    """The peer's address, the name its abuse limits are counted under."""
    return request.client.host if request.client else "unknown"


def require_unrestricted(key: KeyInfo) -> None:
    """The one object-level rule beyond alerts: a key limited to some audiences may not see raw
    event data (customer and late events), features, back-tests, silences or the notification
    log, which all span every desk (403). Alerts themselves are filtered by :func:`check_visible`."""
    if not key.unrestricted:
        raise ForbiddenError("all audiences")


def check_visible(key: KeyInfo, alert_id: str, audience: str) -> None:
    """Object-level check: an alert outside the key's audiences does not exist for it (404)."""
    if not key.sees(audience):
        raise NotFound(f"no alert {alert_id!r}")
