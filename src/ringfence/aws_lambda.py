"""The Lambda entry points of the aws runtime, as ``deploy/aws/template.yaml`` names them.

``api`` and ``ingest`` serve the one HTTP API (:func:`~ringfence.api.app.create_app`) over
:class:`~ringfence.runtimes.aws.platform.AwsPlatform` through Mangum, callers named by the JWT
that API Gateway's authorizer verified; ``process``, ``dispatch`` and ``tick`` hand their event
to :mod:`ringfence.runtimes.aws.handlers`. It lives above both the API and the runtimes (the
runtimes may not import the API). Each container builds its runtime and app once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mangum import Mangum

from ringfence.api.app import create_app
from ringfence.api.auth import JwtAuthenticator
from ringfence.events.sensitive import redact_logs
from ringfence.runtimes.aws import handlers
from ringfence.runtimes.aws.handlers import AwsRuntime
from ringfence.runtimes.aws.platform import AwsPlatform

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]

redact_logs()  # Lambda's own handler, set up before this module is imported: no card number to CloudWatch


def http_handler(rt: AwsRuntime) -> LambdaHandler:
    """The HTTP API over ``rt`` as a Lambda handler of API Gateway (HTTP API, payload 2.0) events.

    Each invocation runs on an event loop of its own, closed when it returns, so nothing of
    one request's loop outlives it (Lambda calls a container's handler one request at a time).
    """
    app = create_app(AwsPlatform(rt), JwtAuthenticator(), manage_lifecycle=False)
    adapter: Mangum | None = None

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal adapter
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # Mangum runs the request on the current loop
        try:
            adapter = adapter or Mangum(app, lifespan="off")
            return adapter(event, context)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    return handle


_http: LambdaHandler | None = None


def api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _http
    _http = _http or http_handler(handlers.runtime())
    return _http(event, context)


ingest = api  # POST /v1/events: the same app, in a function allowed to write the stream


def process(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handlers.process_event(handlers.runtime(), event, context)


def dispatch(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handlers.dispatch_event(handlers.runtime(), event, context)


def tick(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handlers.tick_event(handlers.runtime(), event, context)
