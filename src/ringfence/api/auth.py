"""Bearer API-key authentication and scope checks for every endpoint but /healthz."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Union

from starlette.requests import Request

from ringfence.errors import AuthError, ForbiddenError, NotFound
from ringfence.runtimes.embedded import Platform
from ringfence.store.keys import ApiKeys, KeyInfo

if TYPE_CHECKING:
    from ringfence.runtimes.kafka.platform import KafkaPlatform


AnyPlatform = Union[Platform, "KafkaPlatform"]  # the embedded runtime's, or the kafka runtime's API services


def platform_of(request: Request) -> AnyPlatform:
    platform: AnyPlatform = request.app.state.platform
    return platform


SESSION_COOKIE = "rf_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def authorize(request: Request, scope: str | None) -> KeyInfo:
    """The caller's key, from ``Authorization: Bearer`` or a signed-in session cookie, checked
    for ``scope`` (None: any valid key), CSRF (a session's state changes) and its rate limit.

    Raises AuthError (401/403) or a 429 RequestError.
    """
    platform = platform_of(request)
    limits = request.app.state.limits
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    cookie = request.cookies.get(SESSION_COOKIE)
    try:
        if kind.lower() == "bearer" and token.strip():
            key = platform.keys.authenticate(token.strip(), platform.clock.time())
        elif not header and cookie:
            session = platform.keys.session(cookie, platform.clock.time())
            if request.method not in SAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                    raise ForbiddenError("csrf")
            key = session.key
        else:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' or sign in")
    except ForbiddenError:
        raise
    except AuthError:
        client = request.client.host if request.client else "unknown"
        limits.failures.check(client, "too many failed authentications from this address")
        raise
    limits.per_key.check(key.key_id, "this API key is over its rate limit")
    if scope is not None:
        ApiKeys.require(key, scope)
    request.state.actor = f"key:{key.name}"
    return key


def require_unrestricted(key: KeyInfo) -> None:
    """Pipeline-wide actions (silences, the notification log) need a key that sees every audience."""
    if not key.unrestricted:
        raise ForbiddenError("all audiences")


def check_visible(key: KeyInfo, alert_id: str, audience: str) -> None:
    """Object-level check: an alert outside the key's audiences does not exist for it (404)."""
    if not key.sees(audience):
        raise NotFound(f"no alert {alert_id!r}")
