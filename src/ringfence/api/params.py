"""Query-string parameters, checked with errors that name the parameter."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request

from ringfence.errors import RequestError


def choice_params(request: Request, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(v for raw in request.query_params.getlist(name) for v in raw.split(",") if v)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise RequestError(400, "invalid_query", f"{name} must be one of {', '.join(allowed)}", {"parameter": name})
    return values


def time_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise RequestError(400, "invalid_query", f"{name} must be an RFC 3339 time with offset", {"parameter": name})
    return value.timestamp()


def int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise RequestError(400, "invalid_query", f"{name} must be an integer in {lo}..{hi}", {"parameter": name})
    return int(raw)


def text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and not 1 <= len(value) <= 128:
        raise RequestError(400, "invalid_query", f"{name} must be 1..128 characters", {"parameter": name})
    return value
