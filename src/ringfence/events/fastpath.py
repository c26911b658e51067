"""Ingest's fast path: the compiled core reads and checks an event that is certainly valid.

Validation in Python costs about 14 µs an event, most of ingest's work. The compiled core's
``EventCheck`` accepts an event only when :func:`~ringfence.events.decode.validate_in_full`
(the specification) would accept it as it stands: a built-in type, fields within their
structs' constraints, an RFC 3339 time, canonical money, plain texts (``native/src/ingest.rs``
lists the conditions). For anything else it answers None and the full validation runs,
which alone writes errors.
The structs' constraints are handed to it from :mod:`ringfence.events.types`, so they are
written once; a type it cannot express becomes "never fast", not a guess.
"""

from __future__ import annotations

import functools
import logging
import string
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi

from ringfence.events.fx import FxTable
from ringfence.events.model import PARTITION_FIELD, Event, StoredEvent
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
    REFERENCE_MONEY_FIELDS,
    Envelope,
)

__all__ = ["fast_event", "fast_stored", "portable", "spec"]

if TYPE_CHECKING:
    from ringfence_native import EventCheck, PlainCheck

Spec = tuple[Any, ...]
NEVER: Spec = ("never",)
# the core answers an event's fields in Event's order (and checks that it knows that order)
SOURCE_AT, DATA_AT = Event.__struct_fields__.index("source"), Event.__struct_fields__.index("data")

log = logging.getLogger("ringfence.ingest")
_LITERALS = frozenset(string.ascii_letters + string.digits + "_:@/,' ")
_ESCAPABLE = frozenset(".-+*?()[]{}|^$\\/")


def portable(pattern: str) -> bool:
    """True when Python's ``re`` and the core's ``regex`` crate read ``pattern`` alike, or the
    crate more strictly (its ``$`` is the end only, not also before a final newline): literals,
    escaped punctuation, ``.``, classes of literals and ranges, ``(?:`` and plain groups,
    alternation, ``^``, ``$``, and one quantifier (``*+?``, ``{m}``, ``{m,}``, ``{m,n}``,
    each maybe lazy) after each atom. Anything else (flags, ``\\d``, POSIX classes and class
    sets, possessive quantifiers, which the crate reads otherwise or not at all) is left to
    Python."""
    i, n = 0, len(pattern)
    repeatable = False  # the last token an atom, which a quantifier may follow
    while i < n:
        c = pattern[i]
        atom = True
        if c == "\\":
            if pattern[i + 1 : i + 2] not in _ESCAPABLE:
                return False
            i += 2
        elif c == "[":
            i = _class_end(pattern, i + 1)
            if i < 0:
                return False
        elif c in _LITERALS or c in ".)":
            i += 1
        elif c in "*+?{":
            if not repeatable:
                return False
            i = i + 1 if c != "{" else _count_end(pattern, i + 1)
            if i < 0:
                return False
            i += pattern.startswith("?", i)  # lazy
            atom = False
        elif c in "(|^$":
            i += 3 if pattern.startswith("(?:", i) else 1
            atom = False
        else:
            return False
        repeatable = atom
    return True


def _digits(text: str) -> bool:
    return text.isascii() and text.isdecimal()


def _count_end(pattern: str, i: int) -> int:
    """Where a ``{m}``, ``{m,}`` or ``{m,n}`` opened before ``i`` ends (past its ``}``), or -1."""
    end = pattern.find("}", i)
    low, _, high = pattern[i:end].partition(",")
    return end + 1 if end >= 0 and _digits(low) and (high == "" or _digits(high)) else -1


def _class_end(pattern: str, i: int) -> int:
    """Where a portable class opened before ``i`` ends (past its ``]``), or -1: literals and
    ranges of them, escaped punctuation, a last ``-``."""
    i += pattern.startswith("^", i)
    start = i
    while i < len(pattern) and pattern[i] != "]":
        c, after = pattern[i], pattern[i + 1 : i + 2]
        if c == "\\":
            if after not in _ESCAPABLE:
                return -1
            i += 2
        elif c in _LITERALS and after == "-" and pattern[i + 2 : i + 3] in _LITERALS:
            i += 3  # a range of literals
        elif c in _LITERALS or c == "." or (c == "-" and after == "]" and start < i):
            i += 1
        else:
            return -1
    return i + 1 if start < i < len(pattern) else -1


def spec(info: mi.Type) -> Spec:
    """What the compiled core checks of a value of this type (``never``: leave it to Python)."""
    if isinstance(info, mi.StrType):
        if info.pattern is not None and not portable(info.pattern):
            return NEVER
        return ("text", info.min_length or 0, info.max_length, info.pattern)
    if isinstance(info, mi.IntType):
        return NEVER if info.multiple_of is not None else _int(info)
    if isinstance(info, mi.FloatType):
        if info.multiple_of is not None:
            return NEVER
        return ("float", *(None if b is None else float(b) for b in (info.gt, info.ge, info.lt, info.le)))
    if isinstance(info, mi.BoolType):
        return ("bool",)
    if isinstance(info, mi.LiteralType) and all(isinstance(v, str) for v in info.values):
        return ("choice", list(info.values))
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        # money is int | float | str: the fast path takes the text only (the canonical form)
        texts = [t for t in members if isinstance(t, mi.StrType)]
        inner = spec(members[0]) if len(members) == 1 else spec(texts[0]) if len(texts) == 1 else NEVER
        return ("optional", inner) if len(members) < len(info.types) else inner
    if isinstance(info, mi.StructType):
        config = info.cls.__struct_config__
        if not info.forbid_unknown_fields or info.array_like or info.tag_field is not None or not config.omit_defaults:
            return NEVER
        fields = []
        for f in info.fields:
            # an optional field's default must be None: the core leaves it out when null
            defaults_none = f.default is None and f.default_factory is msgspec.NODEFAULT
            if f.name != f.encode_name or not (f.required or defaults_none):
                return NEVER
            fields.append((f.name, f.required, spec(f.type)))
        return ("object", fields)
    if isinstance(info, mi.DateTimeType) and info.tz:
        return ("time",)
    if isinstance(info, mi.RawType):
        return ("raw",)
    return NEVER


def _int(info: mi.IntType) -> Spec:
    """An int's bounds as inclusive ones (msgspec takes one of gt and ge, of lt and le, and
    only bounds within 64 bits, as the core's ints are)."""
    ge = info.ge if info.gt is None else info.gt + 1
    le = info.le if info.lt is None else info.lt - 1
    return ("int", ge, le)


@functools.cache
def _check() -> EventCheck | None:
    """The compiled core's check, or None (no core, or types it cannot take: logged, and
    every event then validated in full, never refused for it)."""
    plain = plain_check()
    if plain is None:
        return None
    try:
        return _event_check(plain)
    except Exception:
        log.exception("ingest's fast path is off: the compiled core could not take the event types")
        return None


def _envelope() -> dict[str, Spec]:
    """The envelope's specs in Event's order of its fields, once the envelope is checked to be
    what the core reads (Event's fields; an absent field None only where it is optional and
    None by default); else ValueError, and the fast path is off."""
    envelope = mi.type_info(Envelope)
    if not isinstance(envelope, mi.StructType) or {f.name for f in envelope.fields} != set(Event.__struct_fields__):
        raise ValueError("the envelope's fields are not the event's")
    specs = {f.name: spec(f.type) for f in envelope.fields}
    for f in envelope.fields:
        optional = specs[f.name][0] == "optional"
        if f.encode_name != f.name or f.required == optional or not (f.required or f.default is None):
            raise ValueError(f"the envelope's {f.name} is not what the fast path reads")
    if specs["occurred_at"] != ("time",) or specs["data"] != ("raw",):
        raise ValueError("the envelope's time or data is not what the fast path reads")
    return {name: specs[name] for name in Event.__struct_fields__}


def _event_check(plain: PlainCheck) -> EventCheck:
    from ringfence_native import EventCheck

    return EventCheck(
        plain,
        _envelope(),
        {name: spec(mi.type_info(cls)) for name, cls in BUILTIN_TYPES.items()},
        customerless=list(CUSTOMERLESS_TYPES),
        money=list(MONEY_FIELDS),
        reference_money=list(REFERENCE_MONEY_FIELDS),
        currency=CURRENCY_FIELD,
        exponents=CURRENCY_EXPONENTS,
        max_major_digits=MAX_MAJOR_DIGITS,
        masked=list(MASKED_FIELDS),
        ip=IP_FIELD,
        partition_field=PARTITION_FIELD,
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
    if fields is None or (sources is not None and fields[SOURCE_AT] not in sources):
        return None
    fx.stamp(fields[DATA_AT], now)
    return Event(*fields)


def fast_stored(
    items: Sequence[object], now: float, sources: Collection[str] | None, fx: FxTable, partitions: int
) -> list[StoredEvent | None]:
    """Each of ``items`` (a body's events, cut out) as a log of ``partitions`` stores it
    (``ringfence.log.base.stored_event`` of :func:`fast_event`'s event) where the compiled
    core can make that alone: the event certainly valid, its source one of ``sources``, and
    no rate to stamp (no money, or money in the reference currency). None for the others."""
    check = _check()
    if check is None:
        return [None] * len(items)
    allowed = None if sources is None else set(sources)
    return check.stored(list(items), now, fx.reference, partitions, allowed)
