"""``GET /v1/alerts/stream``: alert changes as server-sent events, for the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ringfence.api.auth import authorize, platform_of

HEARTBEAT_S = 15.0


async def alert_stream(request: Request) -> StreamingResponse:
    key = authorize(request, "alerts:read")
    stream = platform_of(request).stream
    queue = stream.subscribe()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": ping\n\n"  # keeps proxies from closing an idle stream
                    continue
                if not key.sees(event["audience"]):
                    continue
                yield b"event: alert\ndata: " + msgspec.json.encode(event) + b"\n\n"
        finally:
            stream.unsubscribe(queue)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})
