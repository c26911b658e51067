"""Bearer API-key authentication and scope checks for every endpoint but /healthz."""

from __future__ import annotations

from starlette.requests import Request

from ringfence.errors import AuthError
from ringfence.runtimes.embedded import Platform
from ringfence.store.keys import ApiKeys, KeyInfo


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def authorize(request: Request, scope: str | None) -> KeyInfo:
    """The caller's key, checked for ``scope`` (None: any valid key) and its rate limit.

    Raises AuthError (401/403) or a 429 RequestError.
    """
    platform = platform_of(request)
    limits = request.app.state.limits
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    try:
        if kind.lower() != "bearer" or not token.strip():
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        key = platform.keys.authenticate(token.strip(), platform.clock.time())
    except AuthError:
        client = request.client.host if request.client else "unknown"
        limits.failures.check(client, "too many failed authentications from this address")
        raise
    limits.per_key.check(key.key_id, "this API key is over its rate limit")
    if scope is not None:
        ApiKeys.require(key, scope)
    request.state.actor = f"key:{key.name}"
    return key
