"""``GET/PUT /v1/fx/rates``: the FX rates ingest converts amounts into the reference currency
with (:mod:`ringfence.events.fx`). A PUT replaces the table (a new, audited version); JSON
``{"rates": [{"currency", "rate", "as_of"}]}`` or the CSV ``ringfence fx load`` reads."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ringfence.api.auth import authorize, platform_of, refuse_while_disk_low
from ringfence.api.bodies import read_body
from ringfence.api.errors import json_response
from ringfence.errors import FieldError, RequestError
from ringfence.events.fx import MAX_CSV_BYTES, invalid, parse_rates, read_csv

CSV_TYPES = frozenset({"text/csv", "application/csv"})
EXPECTED = '{"rates": [{"currency": "USD", "rate": "0.92", "as_of": "2026-12-01"}]}'


async def get_rates(request: Request) -> Response:
    authorize(request, "rules:read")
    platform = platform_of(request)
    return json_response(platform.fx_table().to_dict(platform.clock.time()))


async def put_rates(request: Request) -> Response:
    caller = authorize(request, "rules:write")
    refuse_while_disk_low(request)
    platform = platform_of(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request, MAX_CSV_BYTES)
    rows = read_csv(_text(raw)) if media in CSV_TYPES else _json_rows(raw)
    now = platform.clock.time()
    rates = parse_rates(rows, platform.fx_table().reference, now)
    table = await run_in_threadpool(platform.load_fx, rates, caller.actor, now)
    return json_response(table.to_dict(now))


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise invalid([FieldError("file", "not UTF-8 text")]) from None


def _json_rows(raw: bytes) -> list[Any]:
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise RequestError(400, "invalid_body", f"expected {EXPECTED} (JSON)") from None
    if not isinstance(body, dict) or set(body) != {"rates"} or not isinstance(body["rates"], list):
        raise RequestError(400, "invalid_body", f"expected {EXPECTED}")
    rows: list[Any] = body["rates"]
    return rows
