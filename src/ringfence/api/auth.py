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
    """The caller's key, checked for ``scope`` (None: any valid key). Raises AuthError."""
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    platform = platform_of(request)
    key = platform.keys.authenticate(token.strip(), platform.clock.time())
    if scope is not None:
        ApiKeys.require(key, scope)
    request.state.actor = f"key:{key.name}"
    return key
