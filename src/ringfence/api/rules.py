"""Rule pack lifecycle: read, validate, replace (hot reload), backtest; and run-time lists."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import AnyPlatform, authorize, platform_of
from ringfence.api.bodies import json_body, read_body
from ringfence.api.errors import json_response
from ringfence.api.params import int_param
from ringfence.clock import iso
from ringfence.engine.backtest import backtest
from ringfence.engine.pack import MAX_PACK_BYTES, RulePack, load_pack
from ringfence.engine.patterns import PatternSpec
from ringfence.engine.rules import RuleSpec
from ringfence.errors import RequestError, RulePackError
from ringfence.events.model import decode_event

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/plain"})
MAX_LIST_VALUES = 100_000
MAX_LIST_VALUE_CHARS = 256


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


async def _candidate(request: Request) -> RulePack:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in YAML_TYPES:
        raise RequestError(415, "unsupported_media_type", "send the rule pack as application/yaml")
    body = await read_body(request, MAX_PACK_BYTES)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise RequestError(400, "invalid_rule_pack", "the rule pack is not UTF-8") from None
    try:
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
    pack = await _candidate(request)
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
    pack = await _candidate(request)
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


async def backtest_rules(request: Request) -> Response:
    authorize(request, "rules:read")
    platform = platform_of(request)
    limit = int_param(request, "limit", 100_000, 1, 1_000_000) or 100_000
    candidate = await _candidate(request)

    def run() -> dict[str, Any]:
        head = platform.log.head()
        records = platform.log.read(max(0, head - limit), limit)
        events = ((r.offset, r.partition, r.ingested_at, decode_event(r.body)) for r in records)
        hits = backtest(events, platform.pack, candidate, dict(platform.engine.lists))
        return {
            "events": len(records),
            "live_version": platform.pack.version,
            "candidate_version": candidate.version,
            "hits": hits,
        }

    return json_response(await run_in_threadpool(run))


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
    body = await json_body(request, _ListBody, '{"values": ["..."]}', 16 * 1024 * 1024)
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
