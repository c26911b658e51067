"""Types of what expressions read: event fields (from the wire contract) and features.

A type is a name (``number``, ``string``, ``bool``, ``any``, ``list``) or, for an
object, a mapping from its field names to their types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import msgspec

from ringfence.events.types import BUILTIN_TYPES, MONEY_FIELDS, REFERENCE_MONEY_FIELDS

NUMBER, STRING, BOOL, ANY, LIST = "number", "string", "bool", "any", "list"
FieldType: TypeAlias = str | Mapping[str, "FieldType"]

ENVELOPE_TYPES: dict[str, FieldType] = {
    "event_id": STRING,
    "type": STRING,
    "occurred_at": NUMBER,
    "source": STRING,
    "customer_id": STRING,
    "account_id": STRING,
}


# the rate ingest converted an event's money at (:mod:`ringfence.events.fx`)
FX_STAMP: dict[str, FieldType] = {"reference": STRING, "rate": STRING, "as_of": STRING, "stale": BOOL, "missing": BOOL}


def _from_info(info: Any) -> FieldType:
    if isinstance(info, msgspec.inspect.UnionType):
        kinds = {
            _from_info(t)
            for t in info.types
            if not isinstance(t, msgspec.inspect.NoneType) and not isinstance(_from_info(t), Mapping)
        }
        structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        if structs and not kinds:
            return _from_info(structs[0])
        return next(iter(kinds)) if len(kinds) == 1 else ANY
    if isinstance(info, msgspec.inspect.StructType):
        return {f.name: _from_info(f.type) for f in info.fields}
    if isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        return NUMBER
    if isinstance(info, msgspec.inspect.StrType | msgspec.inspect.LiteralType):
        return STRING
    if isinstance(info, msgspec.inspect.BoolType):
        return BOOL
    return ANY


def _merge(a: FieldType, b: FieldType) -> FieldType:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return {k: _merge(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k, ANY)) for k in {*a, *b}}
    return a if a == b else ANY


def _type_schema(name: str) -> dict[str, FieldType]:
    info = msgspec.inspect.type_info(BUILTIN_TYPES[name])
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: _from_info(f.type) for f in info.fields}
    for money, ref in zip(MONEY_FIELDS, REFERENCE_MONEY_FIELDS, strict=True):  # decimal texts, read as numbers
        if money in fields:
            fields[money] = fields[ref] = NUMBER  # ref: the same in the reference currency (ingest's stamp)
            fields["fx"] = FX_STAMP
    return fields


_SCHEMAS = {name: _type_schema(name) for name in BUILTIN_TYPES}


def data_schema(types: Iterable[str]) -> dict[str, FieldType] | None:
    """The fields of ``data`` over all ``types`` (None if one is a custom, free-form type)."""
    merged: dict[str, FieldType] = {}
    for name in types:
        schema = _SCHEMAS.get(name)
        if schema is None:
            return None
        for field, ftype in schema.items():
            merged[field] = _merge(merged[field], ftype) if field in merged else ftype
    return merged
