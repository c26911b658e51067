"""Who calls, and what they may do, for every endpoint but /healthz.

An :class:`Authenticator` names the caller of a request; the deployment picks one when it
creates the app: :class:`ApiKeyAuthenticator` (bearer API keys and signed-in browser sessions,
the embedded and kafka runtimes) or :class:`JwtAuthenticator` (the claims of a JWT that API
Gateway's authorizer verified, the aws runtime on Lambda). Both yield a :class:`Caller`, so
scopes, audiences, sources, rate limits and the audit trail work the same behind either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ringfence.api.platform import Platform
from ringfence.clock import Clock
from ringfence.errors import AuthError, Conflict, ForbiddenError, NotFound, NotSupported, OverloadedError, RequestError
from ringfence.store.keys import DESK_WIDE_SCOPES, KeyInfo, Session

log = logging.getLogger("ringfence.api")
SESSION_COOKIE = "rf_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller(KeyInfo):
    """A request's caller: a key's rights (its scopes, audiences and sources, as
    :class:`KeyInfo` checks them) and ``actor``, its name in the audit trail and alert history."""

    actor: str = ""

    @classmethod
    def of_key(cls, key: KeyInfo) -> Caller:
        fields = {f.name: getattr(key, f.name) for f in dataclasses.fields(key)}
        return cls(**fields, actor=f"key:{key.name}")


class Authenticator(Protocol):
    """Names the caller of a request, and keeps browser sessions where it can."""

    def identify(self, request: Request) -> tuple[Caller, Session | None]:
        """The caller behind the request's credentials as they stand now (and its session, if a
        cookie was used). Raises AuthError if missing, unknown, revoked, expired or signed out."""
        ...

    def sign_in(self, token: str, admit: Callable[[str], None]) -> tuple[str, Session]:
        """A new session (its id for the cookie) for the key ``token``; AuthError for a bad key.
        ``admit`` is called with the key's id once its secret is verified, before the session is
        made, and may raise to refuse it."""
        ...

    def session(self, session_id: str) -> Session:
        """The live session behind a cookie; AuthError if unknown, expired or its key revoked."""
        ...

    def sign_out(self, session_id: str) -> None: ...


class KeyRing(Protocol):
    """API keys and the browser sessions signed in with them (:class:`~ringfence.store.keys.ApiKeys`)."""

    def authenticate(self, token: str, now: float) -> KeyInfo: ...

    def create_session(
        self, token: str, now: float, ttl_s: float = ..., admit: Callable[[str], None] = ...
    ) -> tuple[str, Session]: ...

    def session(self, session_id: str, now: float) -> Session: ...

    def end_session(self, session_id: str, now: float) -> None: ...


class ApiKeyAuthenticator:
    """``Authorization: Bearer <API key>``, or the session cookie of a browser signed in with one."""

    def __init__(self, keys: KeyRing, clock: Clock) -> None:
        self._keys = keys
        self._clock = clock

    def identify(self, request: Request) -> tuple[Caller, Session | None]:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        cookie = request.cookies.get(SESSION_COOKIE)
        if kind.lower() == "bearer" and token.strip():
            return Caller.of_key(self._keys.authenticate(token.strip(), self._clock.time())), None
        if not header and cookie:
            session = self.session(cookie)
            return Caller.of_key(session.key), session
        raise AuthError("missing API key: send 'Authorization: Bearer <key>' or sign in")

    def sign_in(self, token: str, admit: Callable[[str], None]) -> tuple[str, Session]:
        return self._keys.create_session(token, self._clock.time(), admit=admit)

    def session(self, session_id: str) -> Session:
        return self._keys.session(session_id, self._clock.time())

    def sign_out(self, session_id: str) -> None:
        self._keys.end_session(session_id, self._clock.time())


SOURCES_CLAIM = "ringfence_sources"  # the event sources a producer may write (absent: any)
AUDIENCES_CLAIM = "ringfence_audiences"  # the audiences whose alerts a caller sees (absent: all)


def _claim_values(value: object) -> tuple[str, ...] | None:
    """A list claim: a JSON list, or the "[a b]" / "a b" / "a,b" string API Gateway passes on."""
    if isinstance(value, list):
        return tuple(sorted({str(v) for v in value}))
    if isinstance(value, str):
        return tuple(sorted(set(value.strip("[]").replace(",", " ").split())))
    return None


def caller_of_claims(jwt: Mapping[str, Any]) -> Caller:
    """The caller a verified JWT names: ``sub``; scopes from ``scope``/``scp`` (and the list API
    Gateway made of them); audiences and sources unrestricted unless the token's
    ``ringfence_audiences`` / ``ringfence_sources`` claims restrict them. A restricting claim
    that names nothing is refused (401) rather than read as "unrestricted"."""
    claims = jwt.get("claims") or {}
    scopes = {str(s) for s in jwt.get("scopes") or []}
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):  # "a b", or "[a b]" / "[a, b]": a list claim as API Gateway passes it on
            text = value.strip()
            listed = text.startswith("[") and text.endswith("]")
            scopes.update((text[1:-1].replace(",", " ") if listed else text).split())
        elif isinstance(value, list):
            scopes.update(str(v) for v in value)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("the token names no subject")
    return Caller(
        key_id=f"jwt:{subject}",
        name=subject,
        scopes=tuple(sorted(scopes)),
        created_at=0.0,
        revoked_at=None,
        last_used_at=None,
        audiences=_restriction(claims, AUDIENCES_CLAIM),
        sources=_restriction(claims, SOURCES_CLAIM),
        actor=f"jwt:{subject}",
    )


def _restriction(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The values of a restricting list claim; () (unrestricted) when the token has none."""
    if claim not in claims:
        return ()
    values = _claim_values(claims[claim])
    if not values:
        raise AuthError(f"the token's {claim} claim names nothing")
    return values


class JwtAuthenticator:
    """The claims of a JWT that API Gateway's JWT authorizer verified before the request reached
    Lambda, from the API Gateway event the ASGI adapter (Mangum) puts in the request's scope.
    Browser sessions are the identity provider's: none here (501)."""

    def identify(self, request: Request) -> tuple[Caller, Session | None]:
        event = request.scope.get("aws.event")
        context = event.get("requestContext") if isinstance(event, Mapping) else None
        authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
        jwt = authorizer.get("jwt") if isinstance(authorizer, Mapping) else None
        if not isinstance(jwt, Mapping):
            raise AuthError("no verified caller: the route must have the JWT authorizer")
        return caller_of_claims(jwt), None

    def sign_in(self, token: str, admit: Callable[[str], None]) -> tuple[str, Session]:
        raise self._no_sessions()

    def session(self, session_id: str) -> Session:
        raise self._no_sessions()

    def sign_out(self, session_id: str) -> None:
        raise self._no_sessions()

    @staticmethod
    def _no_sessions() -> NotSupported:
        return NotSupported("browser sessions are not available here: sign in with the identity provider")


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def authenticator_of(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


def authorize(request: Request, scope: str | None) -> Caller:
    """The request's caller, checked for ``scope`` (None: any valid caller), CSRF (a session's
    state changes) and its rate limit.

    Raises AuthError (401/403) or a 429 RequestError.
    """
    limits = request.app.state.limits
    try:
        caller, session = authenticator_of(request).identify(request)
        if session is not None and request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                raise ForbiddenError("csrf")
    except ForbiddenError:
        raise
    except AuthError:
        limits.failures.check(client_address(request), "too many failed authentications from this address")
        raise
    limits.per_key.check(caller.key_id, "this API key is over its rate limit")
    # only ingest checks signatures: a signing key's bearer token alone opens nothing else
    if caller.signing_key and scope != "events:write":
        raise ForbiddenError("signed")
    if scope is not None and not caller.allows(scope):
        raise ForbiddenError(scope)
    # a caller limited to audiences never holds rules:write or admin (keys create refuses it); one
    # that does (a key made before, a token's claims) is refused every scope: admin grants all
    if scope is not None and not caller.unrestricted and DESK_WIDE_SCOPES & set(caller.scopes):
        raise ForbiddenError("all audiences")
    return caller


def still_authorized(request: Request) -> bool:
    """Whether the credentials of a long-lived response (a stream) still hold: its key not
    revoked, its session not signed out nor expired. Blocking (a store read): call off the loop."""
    try:
        authenticator_of(request).identify(request)
    except AuthError:
        return False
    return True


def signed_in(request: Request) -> bool:
    """Whether the request carries the cookie of a live session (for the dashboard's pages).
    Blocking (a store read): call off the loop."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return False
    try:
        authenticator_of(request).session(cookie)
    except (AuthError, NotSupported):  # a runtime without sessions (JWT callers) has no one signed in
        return False
    return True


def client_address(request: Request) -> str:
    """The peer's address, the name its abuse limits are counted under."""
    return request.client.host if request.client else "unknown"


def require_unrestricted(caller: Caller) -> None:
    """The one object-level rule beyond alerts: a caller limited to some audiences may not see raw
    event data (customer and late events), features, back-tests, silences or the notification
    log, nor use the scopes of :data:`DESK_WIDE_SCOPES` (rules, lists, rates, audit, quarantine),
    which all span every desk (403). Alerts themselves are filtered by :func:`check_visible`."""
    if not caller.unrestricted:
        raise ForbiddenError("all audiences")


def shown_after_change(caller: Caller, full: Any, brief: dict[str, Any]) -> Any:
    """What a change answers: the object changed to a caller that may read alerts (and the
    silences and notifications about them), ``brief`` (its id and status) to one that may only
    change them, which must not read them through the answer."""
    return full if caller.allows("alerts:read") else brief


def check_visible(caller: Caller, alert_id: str, audience: str) -> None:
    """Object-level check: an alert outside the caller's audiences does not exist for it (404)."""
    if not caller.sees(audience):
        raise NotFound(f"no alert {alert_id!r}")


DISK_RETRY_AFTER_S = 60  # a disk is freed by a person or by retention: minutes, not seconds
CHANGE_BYTES = 1024  # what a change stores besides its text: a history row, an audit entry, about


def refuse_while_disk_low(request: Request) -> None:
    """503 with Retry-After while the store's disk is nearly full (the runtime's
    ``changes_refused``): people's changes and admins' writes alike, so that what is left of
    the disk stays the processor's."""
    refused = platform_of(request).changes_refused()
    if refused is not None:
        raise OverloadedError(refused, DISK_RETRY_AFTER_S)


@contextlib.asynccontextmanager
async def change_charged(
    request: Request, caller: Caller, *texts: str, copies: int = 2, more: int = 0
) -> AsyncIterator[None]:
    """Charge a change to alerts or silences to its key's budget of what it may add to the store
    an hour (``people_writes_mib_per_hour``; 429 ``change_budget`` past it), given back if the
    change is then refused (a 404, a 409: any other failure may have come after it was made).
    ``texts``: what it stores, each ``copies`` times (a reason in the history and in the audit
    entry); ``more``: bytes it may store besides. Each change was bounded, and a key's
    changes only by its rate limit: comments on alert after alert, assignments back and forth,
    silences ending at once (kept 30 days) grew the store 28-290 GB a day for one analyst key
    in a hostile test. The budget is the platform's (:meth:`Platform.budget`), one for every API
    process, read and written off the event loop. None is taken while the store's disk is nearly
    full (503: the runtime's ``changes_refused``)."""
    refuse_while_disk_low(request)
    cost = CHANGE_BYTES + copies * sum(len(text.encode()) for text in texts) + more
    budget = request.app.state.limits.changes
    message = "this API key has changed alerts and silences past its budget an hour"
    await run_in_threadpool(budget.check, caller.key_id, message, cost, "change_budget")
    try:
        yield
    except (NotFound, Conflict, RequestError):
        try:
            await run_in_threadpool(budget.give_back, caller.key_id, cost)
        except Exception as exc:  # the change's own answer stands; the key is short of it for a while
            log.warning("could not give back a refused change's charge: %s: %s", type(exc).__name__, exc)
        raise
