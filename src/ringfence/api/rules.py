"""Rule pack lifecycle: read, validate, replace (hot reload); and run-time lists.

Back-tests are in :mod:`ringfence.api.backtests`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import AnyPlatform, authorize, platform_of
from ringfence.api.bodies import json_body, read_body
from ringfence.api.errors import json_response
from ringfence.clock import iso
from ringfence.engine.pack import MAX_PACK_BYTES, RulePack, load_pack
from ringfence.engine.patterns import PatternSpec
from ringfence.engine.rules import RuleSpec
from ringfence.errors import RequestError, RulePackError

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/plain"})
MAX_LIST_VALUES = 100_000
MAX_LIST_VALUE_CHARS = 256
MAX_LIST_BODY = 6 * 1024 * 1024  # 100,000 IPv6 addresses; decoded, checked and stored in well under 50 MB


def describe(platform: AnyPlatform, pack: RulePack) -> dict[str, Any]:
    """A pack as ``GET /v1/rules`` shows it, with each detection's hit counts."""
    now = platform.clock.time()
    hits = platform.store.rule_hits()
    last_hour, last_day = platform.store.rule_hits(since=now - 3600), platform.store.rule_hits(since=now - 86400)
    specs: list[RuleSpec | PatternSpec] = [*pack.rules, *pack.patterns]
    detections = [
        {
            "id": d.id,
            "kind": d.kind if isinstance(d, PatternSpec) else "rule",
            "description": d.description,
            "on": sorted(d.on),
            "mode": d.output.mode,
            "severity": d.output.severity,
            "audience": d.output.audience,
            "hits": hits.get(d.id, {}),
            "hits_last_hour": last_hour.get(d.id, {}),
            "hits_last_day": last_day.get(d.id, {}),
        }
        for d in specs
    ]
    return {
        "version": pack.version,
        "digest": pack.digest,
        "description": pack.description,
        "detections": detections,
        "features": [f.name for f in pack.features],
        "anomalies": [a.name for a in pack.anomalies],
        "lists": sorted(pack.lists),
    }


class PackChecks:
    """Rule pack checks run ``running`` at a time: checking is CPU-bound Python (seconds for
    thousands of rules) that holds the GIL against the processor thread, so many at once would
    starve it. A few more wait on the event loop (no thread held); past them, 429.
    """

    def __init__(self, running: int = 1, waiting: int = 4) -> None:
        self._running = asyncio.Semaphore(running)
        self._admitted = 0
        self._limit = running + waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._admitted >= self._limit:
            raise RequestError(429, "rate_limited", "too many rule pack checks at once", {"retry_after": 1})
        self._admitted += 1
        try:
            async with self._running:
                yield
        finally:
            self._admitted -= 1


async def read_candidate(request: Request) -> RulePack:
    """The request's body as a checked rule pack (400 naming the error, 413, 415)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in YAML_TYPES:
        raise RequestError(415, "unsupported_media_type", "send the rule pack as application/yaml")
    body = await read_body(request, MAX_PACK_BYTES)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise RequestError(400, "invalid_rule_pack", "the rule pack is not UTF-8") from None
    checks: PackChecks = request.app.state.pack_checks
    try:
        async with checks.slot():
            return await run_in_threadpool(load_pack, text)
    except RulePackError as exc:
        raise RequestError(400, "invalid_rule_pack", str(exc), {"where": exc.where}) from None


async def get_rules(request: Request) -> Response:
    authorize(request, "rules:read")
    platform = platform_of(request)
    body = await run_in_threadpool(describe, platform, platform.pack)
    active = platform.packs.active()
    body["text"] = platform.pack.text
    body["activated_at"] = iso(active.created_at) if active else None
    body["activated_by"] = active.created_by if active else None
    return json_response(body)


async def validate_rules(request: Request) -> Response:
    authorize(request, "rules:read")
    platform = platform_of(request)
    pack = await read_candidate(request)
    dropped = platform.engine.dropped_state_names(pack)
    return json_response(
        {
            "valid": True,
            "version": pack.version,
            "digest": pack.digest,
            "detections": len(pack.detection_ids),
            "state_reset": [name.split(":")[-1] for name in dropped],
        }
    )


async def put_rules(request: Request) -> Response:
    key = authorize(request, "rules:write")
    platform = platform_of(request)
    pack = await read_candidate(request)
    dropped = platform.engine.dropped_state_names(pack)
    version = await run_in_threadpool(platform.packs.activate, pack, f"key:{key.name}", platform.clock.time())
    platform.processor.request_reload(pack)
    return json_response(
        {
            "version": pack.version,
            "digest": pack.digest,
            "seq": version.seq,
            "state_reset": [name.split(":")[-1] for name in dropped],
        }
    )


class _ListBody(msgspec.Struct, forbid_unknown_fields=True):
    values: list[str]


async def get_list(request: Request) -> Response:
    authorize(request, "rules:read")
    platform = platform_of(request)
    name = request.path_params["name"]
    if name not in platform.pack.lists:
        raise RequestError(404, "not_found", f"the rule pack declares no list {name!r}")
    values = platform.engine.lists.get(name, frozenset())
    return json_response({"name": name, "values": sorted(values), "count": len(values)})


async def put_list(request: Request) -> Response:
    key = authorize(request, "rules:write")
    platform = platform_of(request)
    name = request.path_params["name"]
    if name not in platform.pack.lists:
        raise RequestError(404, "not_found", f"the rule pack declares no list {name!r}")
    body = await json_body(request, _ListBody, '{"values": ["..."]}', MAX_LIST_BODY)
    if len(body.values) > MAX_LIST_VALUES:
        raise RequestError(400, "invalid_body", f"a list holds at most {MAX_LIST_VALUES} values")
    if any(not v or len(v) > MAX_LIST_VALUE_CHARS for v in body.values):
        raise RequestError(400, "invalid_body", f"values must be 1..{MAX_LIST_VALUE_CHARS} characters")
    saved = await run_in_threadpool(
        platform.packs.put_list, name, body.values, f"key:{key.name}", platform.clock.time(), platform.pack.lists[name]
    )
    platform.processor.request_list(name, frozenset(saved.values))
    return json_response(
        {"name": name, "values": list(saved.values), "count": len(saved.values), "version": saved.version}
    )
