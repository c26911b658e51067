"""Request parameters (query string, path, headers), parsed strictly with errors that name
the parameter. Every number a client sends goes through :func:`parse_int`: ASCII digits only
(``str.isdigit`` also accepts "²" and Arabic-Indic digits, which ``int`` then refuses), no sign, no spaces,
no underscores, a bounded length; so crafted input is a 400, never a 500.
"""

from __future__ import annotations

import re
from datetime import datetime

from starlette.requests import Request

from ringfence.errors import NotFound, RequestError
from ringfence.events.controls import envelope_fault
from ringfence.events.sensitive import PAN_MESSAGE, looks_like_pan

_ASCII_INTEGER = re.compile(r"[0-9]{1,19}")  # 19 digits hold any int64; int() never sees a huge string
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
CURSOR_MAX = 2**62
MAX_TEXT = 128
MAX_TOKEN = 1024  # an opaque cursor: a DynamoDB key, encoded, fits well within it


def parse_int(text: str | None, lo: int, hi: int) -> int | None:
    """``text`` as an integer in ``lo..hi``; None when it is anything else (absent included)."""
    if text is None or _ASCII_INTEGER.fullmatch(text) is None:
        return None
    value = int(text)
    return value if lo <= value <= hi else None


def parse_time(text: str) -> float | None:
    """An RFC 3339 time with offset (ASCII) as a Unix timestamp; None when it is not one."""
    if _RFC3339.fullmatch(text) is None:
        return None
    try:
        value = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.timestamp() if value.tzinfo is not None else None


def printable(text: str) -> bool:
    """No control characters (NUL breaks PostgreSQL text, CR/LF forge log lines) nor surrogates."""
    return envelope_fault(text) is None


def _invalid(name: str, message: str) -> RequestError:
    return RequestError(400, "invalid_query", f"{name} {message}", {"parameter": name})


def _single(request: Request, name: str) -> str | None:
    """The one value of ``name``; a parameter given twice is refused, not resolved by guessing."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise _invalid(name, "must be given at most once")
    return values[0] if values else None


def choice_params(request: Request, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(v for raw in request.query_params.getlist(name) for v in raw.split(",") if v)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise _invalid(name, f"must be one of {', '.join(allowed)}")
    return values


def time_param(request: Request, name: str) -> float | None:
    raw = _single(request, name)
    if raw is None:
        return None
    value = parse_time(raw)
    if value is None:
        raise _invalid(name, "must be an RFC 3339 time with offset")
    return value


def int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = _single(request, name)
    if raw is None:
        return default
    value = parse_int(raw, lo, hi)
    if value is None:
        raise _invalid(name, f"must be an integer in {lo}..{hi} (ASCII digits)")
    return value


def limit_param(request: Request, default: int, hi: int) -> int:
    """``limit``: a page size in 1..hi."""
    value = int_param(request, "limit", default, 1, hi)
    return default if value is None else value


def cursor_param(request: Request) -> int | None:
    """``cursor``: the ``next_cursor`` of a previous page of a listing by offset (an integer)."""
    return int_param(request, "cursor", None, 0, CURSOR_MAX)


def token_param(request: Request) -> str | None:
    """``cursor``: the ``next_cursor`` of a previous page, an opaque string the store gave out
    (alerts, notifications). Only its size and characters are checked here; the store refuses
    one it did not give out (400)."""
    value = _single(request, "cursor")
    if value is not None and not (1 <= len(value) <= MAX_TOKEN and value.isascii() and value.isprintable()):
        raise _invalid("cursor", f"must be the next_cursor of a previous page (1..{MAX_TOKEN} characters)")
    return value


def text_param(request: Request, name: str) -> str | None:
    """A query parameter that names something (a rule, a customer): as :func:`path_text`."""
    value = _single(request, name)
    if value is not None and not (1 <= len(value) <= MAX_TEXT and printable(value)):
        raise _invalid(name, f"must be 1..{MAX_TEXT} printable characters")
    if value is not None and looks_like_pan(value):
        raise _invalid(name, PAN_MESSAGE)
    return value


def path_id(request: Request, name: str) -> str:
    """The id of an object in the path: one that could not exist (too long, control characters)
    is not found (404), like any other unknown id, and never reaches the store. One that looks
    like a card number is looked up like any other: the ids Ringfence makes are hex digests,
    and 1 in some 3,000 reads as one (its error answers star such a number out)."""
    value: str = request.path_params[name]
    if not (1 <= len(value) <= MAX_TEXT and printable(value)):
        raise NotFound(f"no such {name.removesuffix('_id')}")
    return value


def path_text(request: Request, name: str) -> str:
    """A path segment that names something to look up (a customer): 1..128 printable characters,
    never a card number (400: ingest refuses an identifier holding one, so none is stored, and
    a lookup may travel where it would be, as the kafka runtime's queries topic)."""
    value: str = request.path_params[name]
    if not (1 <= len(value) <= MAX_TEXT and printable(value)):
        message = f"{name} must be 1..{MAX_TEXT} printable characters"
        raise RequestError(400, "invalid_path", message, {"parameter": name})
    if looks_like_pan(value):
        raise RequestError(400, "invalid_path", f"{name} {PAN_MESSAGE}", {"parameter": name})
    return value
