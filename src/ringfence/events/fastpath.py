"""Ingest's fast path: the compiled core reads and checks an event that is certainly valid.

Validation in Python cost about 15 µs an event, most of ingest's work. The compiled core's
``EventCheck`` accepts an event only when :func:`~ringfence.events.decode.validate_event`
would accept it as it stands: a built-in type, fields within their structs' constraints, an
RFC 3339 time, canonical money, plain texts (``native/src/ingest.rs`` lists the conditions).
For anything else it answers None and the full validation runs, which alone writes errors.
The structs' constraints are handed to it from :mod:`ringfence.events.types`, so they are
written once; a type it cannot express becomes "never fast", not a guess.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi

from ringfence.events.fx import FxTable
from ringfence.events.model import Event
from ringfence.events.money import CURRENCY_EXPONENTS, MAX_MAJOR_DIGITS
from ringfence.events.sensitive import plain_check
from ringfence.events.types import (
    BUILTIN_TYPES,
    CURRENCY_FIELD,
    CUSTOMERLESS_TYPES,
    IP_FIELD,
    MASKED_FIELDS,
    MAX_EVENT_BYTES,
    MAX_FUTURE_SKEW_S,
    MIN_OCCURRED_AT,
    MONEY_FIELDS,
    Envelope,
)

__all__ = ["fast_event", "spec"]

if TYPE_CHECKING:
    from ringfence_native import EventCheck

Spec = tuple[Any, ...]


def spec(info: mi.Type) -> Spec:
    """What the compiled core checks of a value of this type (``never``: leave it to Python)."""
    if isinstance(info, mi.StrType):
        return ("text", info.min_length or 0, info.max_length, info.pattern)
    if isinstance(info, mi.IntType):
        if info.multiple_of is not None:
            return ("never",)
        ge = info.ge if info.gt is None else max(info.gt + 1, info.ge if info.ge is not None else info.gt + 1)
        le = info.le if info.lt is None else min(info.lt - 1, info.le if info.le is not None else info.lt - 1)
        return ("int", ge, le)
    if isinstance(info, mi.FloatType):
        if info.multiple_of is not None:
            return ("never",)
        return ("float", *(None if b is None else float(b) for b in (info.gt, info.ge, info.lt, info.le)))
    if isinstance(info, mi.BoolType):
        return ("bool",)
    if isinstance(info, mi.LiteralType) and all(isinstance(v, str) for v in info.values):
        return ("choice", list(info.values))
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        # money is int | float | str: the fast path takes the text only (the canonical form)
        texts = [t for t in members if isinstance(t, mi.StrType)]
        inner = spec(members[0]) if len(members) == 1 else spec(texts[0]) if len(texts) == 1 else ("never",)
        return ("optional", inner) if len(members) < len(info.types) else inner
    if isinstance(info, mi.StructType):
        if not info.forbid_unknown_fields or info.array_like or info.tag_field is not None:
            return ("never",)
        fields = []
        for f in info.fields:
            # an optional field's default must be None: the core leaves it out when null
            defaults_none = f.default is None and f.default_factory is msgspec.NODEFAULT
            if f.name != f.encode_name or not (f.required or defaults_none):
                return ("never",)
            fields.append((f.name, f.required, spec(f.type)))
        return ("object", fields)
    if isinstance(info, mi.DateTimeType) and info.tz:
        return ("time",)
    if isinstance(info, mi.RawType):
        return ("raw",)
    return ("never",)


@functools.cache
def _check() -> EventCheck | None:
    plain = plain_check()
    if plain is None:
        return None
    from ringfence_native import EventCheck

    envelope = mi.type_info(Envelope)
    if not isinstance(envelope, mi.StructType):
        raise TypeError("the envelope is a struct")
    return EventCheck(
        plain,
        {f.name: spec(f.type) for f in envelope.fields},
        {name: spec(mi.type_info(cls)) for name, cls in BUILTIN_TYPES.items()},
        customerless=list(CUSTOMERLESS_TYPES),
        money=list(MONEY_FIELDS),
        currency=CURRENCY_FIELD,
        exponents=CURRENCY_EXPONENTS,
        max_major_digits=MAX_MAJOR_DIGITS,
        masked=list(MASKED_FIELDS),
        ip=IP_FIELD,
        max_bytes=MAX_EVENT_BYTES,
        min_time=MIN_OCCURRED_AT,
        max_skew=MAX_FUTURE_SKEW_S,
    )


def fast_event(raw: bytes | msgspec.Raw, now: float, sources: Collection[str] | None, fx: FxTable) -> Event | None:
    """``raw``'s event, validated, normalised and stamped at ``fx``'s rate, if the compiled
    core finds it certainly valid and its source is one of ``sources`` (None: any); else None,
    and the full validation decides."""
    check = _check()
    fields = check.event(raw, now) if check is not None else None
    if fields is None or (sources is not None and fields[3] not in sources):
        return None
    fx.stamp(fields[4], now)
    return Event(*fields)
