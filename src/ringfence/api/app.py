"""The ASGI app: routes of DESIGN §5 and the dashboard, JSON errors, security headers, platform
lifespan. One app for every runtime: uvicorn serves it (embedded, kafka), Mangum on Lambda (aws)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ringfence.api import (
    alerts,
    audit,
    backtests,
    customers,
    events,
    fx,
    health,
    late,
    notifications,
    ops,
    quarantine,
    rules,
    session,
    silences,
    stream,
)
from ringfence.api.auth import Authenticator, signed_in
from ringfence.api.errors import handle_error
from ringfence.api.platform import Platform
from ringfence.dashboard.routes import dashboard_routes
from ringfence.errors import RingfenceError
from ringfence.ratelimit import Buckets, TokenBuckets


class _Text(Convertor[str]):
    """A path parameter of any characters, "/" and line breaks too (a bank's customer ids may
    hold "/"; one holding a line break gets the handler's 400 naming it, not a 404): starlette's
    ``path`` stops at a line break."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("text", _Text())

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    # another site's window keeps no handle on the dashboard's, nor loads its answers
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
]
CSP = b"content-security-policy"
HSTS = [(b"strict-transport-security", b"max-age=31536000; includeSubDomains")]


class SecurityHeaders:
    """Adds the headers every response carries. The API's CSP allows nothing at all; a
    dashboard page sets its own (scripts and styles of this origin only) and keeps it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        extra = SECURITY_HEADERS + (HSTS if scope.get("scheme") == "https" else [])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                own_csp = any(name.lower() == b"content-security-policy" for name, _ in headers)
                message["headers"] = headers + [h for h in extra if not (own_csp and h[0] == CSP)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


ROUTES = [
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/metrics", health.metrics, methods=["GET"]),
    Route("/openapi.json", health.openapi, methods=["GET"]),
    Route("/v1/events", events.post_events, methods=["POST"]),
    Route("/v1/events/late", late.list_late_events, methods=["GET"]),
    Route("/v1/alerts", alerts.list_alerts, methods=["GET"]),
    Route("/v1/alerts/stream", stream.alert_stream, methods=["GET"]),
    Route("/v1/alerts/counts", alerts.count_alerts, methods=["GET"]),
    Route("/v1/alerts/{alert_id}", alerts.get_alert, methods=["GET"]),
    Route("/v1/alerts/{alert_id}/events", alerts.alert_events, methods=["GET"]),
    Route("/v1/alerts/{alert_id}/ack", alerts.ack_alert, methods=["POST"]),
    Route("/v1/alerts/{alert_id}/resolve", alerts.resolve_alert, methods=["POST"]),
    Route("/v1/alerts/{alert_id}/assign", alerts.assign_alert, methods=["POST"]),
    Route("/v1/alerts/{alert_id}/comments", alerts.comment_alert, methods=["POST"]),
    Route("/v1/silences", silences.list_silences, methods=["GET"]),
    Route("/v1/silences", silences.create_silence, methods=["POST"]),
    Route("/v1/silences/{silence_id}", silences.delete_silence, methods=["DELETE"]),
    Route("/v1/notifications", notifications.list_notifications, methods=["GET"]),
    Route("/v1/notifications/{notification_id}/redrive", notifications.redrive, methods=["POST"]),
    Route("/v1/rules", rules.get_rules, methods=["GET"]),
    Route("/v1/rules", rules.put_rules, methods=["PUT"]),
    Route("/v1/rules/validate", rules.validate_rules, methods=["POST"]),
    Route("/v1/rules/backtest", backtests.backtest_rules, methods=["POST"]),
    Route("/v1/lists/{name}", rules.get_list, methods=["GET"]),
    Route("/v1/lists/{name}", rules.put_list, methods=["PUT"]),
    Route("/v1/fx/rates", fx.get_rates, methods=["GET"]),
    Route("/v1/fx/rates", fx.put_rates, methods=["PUT"]),
    Route("/v1/customers/{customer_id:text}/features", customers.customer_features, methods=["GET"]),
    Route("/v1/customers/{customer_id:text}/events", customers.customer_events, methods=["GET"]),
    Route("/v1/stats", ops.stats, methods=["GET"]),
    Route("/v1/quarantine", quarantine.list_quarantine, methods=["GET"]),
    Route("/v1/quarantine/{entry_id}/redrive", quarantine.redrive, methods=["POST"]),
    Route("/v1/audit", audit.list_audit, methods=["GET"]),
    Route("/v1/session", session.current_session, methods=["GET"]),
    Route("/v1/session", session.sign_in, methods=["POST"]),
    Route("/v1/session", session.sign_out, methods=["DELETE"]),
]


# what a producer-facing ingest service answers (the kafka runtime's `serve ingest`): events, its
# health and the FX rates it converts with; nothing an analyst reads or changes (404)
INGEST_ROUTES = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/events"),
        ("GET", "/v1/fx/rates"),
    }
)


def create_app(
    platform: Platform,
    authenticator: Authenticator,
    *,
    manage_lifecycle: bool = True,
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    ingest_only: bool = False,
) -> Starlette:
    """The API over ``platform``, its callers named by ``authenticator``; with
    ``manage_lifecycle`` the app starts and stops the platform; ``ingest_only``: the routes of
    :data:`INGEST_ROUTES` only.

    ``background`` coroutines (e.g. demo traffic) run while the app serves.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            platform.start()
        tasks = [asyncio.create_task(job()) for job in (*background, app.state.ops_history.run)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if manage_lifecycle:
                platform.stop()

    if ingest_only:
        routes = [r for r in ROUTES if any((m, r.path) in INGEST_ROUTES for m in r.methods or ())]
    else:
        routes = [*ROUTES, *dashboard_routes(signed_in)]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={RingfenceError: handle_error, HTTPException: handle_error, Exception: handle_error},
    )
    app.state.platform = platform
    app.state.authenticator = authenticator
    app.state.ops_history = ops.OpsHistory(platform)
    settings = platform.settings
    changes_an_hour = settings.people_writes_mib_per_hour * 2**20  # bytes, and the burst
    app.state.limits = Limits(
        per_key=TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst, platform.clock),
        failures=TokenBuckets(settings.auth_failures_per_min / 60, settings.auth_failures_per_min, platform.clock),
        signin=TokenBuckets(settings.signin_attempts_per_min / 60, settings.signin_attempts_per_min, platform.clock),
        changes=platform.budget("changes", changes_an_hour / 3600, changes_an_hour),
    )
    app.state.backtests = backtests.BacktestSlots(backtests.MAX_RUNNING, platform.clock)
    app.state.alert_counts = alerts.AlertCounts()
    app.state.streams = stream.StreamSlots(settings.max_streams_per_key)
    app.state.searches = customers.Searches()
    app.state.pack_checks = rules.PackChecks()
    app.state.list_answers = {}  # GET /v1/lists/{name}: (values, the answer), by name
    app.state.draining = asyncio.Event()
    app.add_middleware(SecurityHeaders)
    return app


def begin_draining(app: Starlette) -> None:
    """The server stops (before its grace period for requests under way): ingest answers what
    waits for its turn 503, and live streams end, so neither holds the stop until the grace
    period cancels it unanswered."""
    app.state.draining.set()
    ingest = app.state.platform.ingest
    if ingest is not None:
        ingest.stop_taking()


@dataclass(frozen=True)
class Limits:
    per_key: TokenBuckets
    failures: TokenBuckets
    signin: TokenBuckets  # sign-in attempts, per client address and per key id
    changes: Buckets  # bytes of changes to alerts and silences, per key, shared (auth.change_charged)
