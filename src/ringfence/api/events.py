"""``POST /v1/events``: one event, a JSON array, or NDJSON; 202 once durable."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of
from ringfence.api.bodies import media_type, read_body
from ringfence.api.draining import draining_of, unless_stopping
from ringfence.api.errors import LONG_DETAILS, json_response
from ringfence.api.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_request
from ringfence.errors import ClientGone, RequestError
from ringfence.events.decode import TooManyEvents

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed its connection (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def post_events(request: Request) -> Response:
    caller = authorize(request, "events:write")
    platform = platform_of(request)
    media = media_type(request)
    if media not in JSON_TYPES | NDJSON_TYPES:
        raise RequestError(
            415,
            "unsupported_media_type",
            "send application/json or application/x-ndjson",
            {"content_type": media or None},
        )
    service = platform.ingest
    if service is None and platform.accepting:
        raise RequestError(404, "not_here", "this service does not take events: send them to `ringfence serve ingest`")
    if service is None or not platform.accepting:
        raise RequestError(503, "unavailable", "the platform is starting or stopping")
    service.check_capacity(caller.key_id)
    with service.holding(caller.key_id) as take:
        # a body still arriving as the server stops is not waited for (503, not uvicorn's 500 at
        # the end of its grace period: a re-test)
        body = await unless_stopping(draining_of(request), read_body(request, platform.settings.max_body_bytes, take))
        if caller.signing_key:
            verify_request(
                caller.signing_key,
                body,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                platform.clock.time(),
            )
        try:
            result = await service.ingest(
                body,
                ndjson=media in NDJSON_TYPES,
                sources=caller.writable_sources,
                producer=caller.key_id,
                gone=lambda: _disconnected(request),
            )
        except TooManyEvents as exc:
            raise RequestError(413, "too_many_events", str(exc), {"events": exc.count, "limit": exc.limit}) from None
        except ClientGone:  # nobody reads this answer: its body was dropped unread
            raise RequestError(400, "client_disconnected", "the connection closed while the request waited") from None
    # many rejections (each event's errors) are listed off the event loop (errors.LONG_DETAILS)
    many = len(result.rejected) > LONG_DETAILS
    answer = await run_in_threadpool(result.to_dict) if many else result.to_dict()
    if result.accepted == 0 and result.duplicates == 0:
        raise RequestError(400, "invalid_events", "no valid event in the request", answer)
    return await run_in_threadpool(json_response, answer, 202) if many else json_response(answer, status=202)
