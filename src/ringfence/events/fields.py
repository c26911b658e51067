"""Field errors of a JSON object against a msgspec Struct: every one, not only the first.

msgspec stops at the first error. When the fast decode of an envelope or a built-in type's
``data`` fails, :func:`decode_fields` decodes each field on its own (nested structs too), so
a producer learns everything wrong with an event at once. Used by :mod:`.decode`.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Any

import msgspec

from ringfence.errors import FieldError

TOO_DEEP = "JSON is nested too deeply"
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
_raw_object = msgspec.json.Decoder(dict[str, msgspec.Raw])
_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"field `([^`]+)`")


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def field_errors(exc: Exception, prefix: str = "") -> list[FieldError]:
    """msgspec's error as a FieldError whose dotted path starts at ``prefix``."""
    match = _PATH.match(str(exc))
    assert match is not None
    message, path = match.group("msg"), (match.group("path") or "").replace("[...]", "").lstrip(".")
    named = _FIELD.search(message)
    if named and ("unknown field" in message or "missing required field" in message):
        path = join(path, named.group(1))
    full = ".".join(p for p in (prefix, path) if p) or "$"
    return [FieldError(full.replace(".[", "["), message)]


@functools.cache
def _decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(tp)


@functools.cache
def _struct_in(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct a field's type holds (``Geo`` of ``Geo | None``), if any."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    found = [a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct)]
    return found[0] if len(found) == 1 else None


@functools.cache
def _fields_of(cls: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    """``cls``'s fields by their name in JSON, once: reading them evaluates its annotations,
    about 0.1 ms a call, which a body of invalid events paid each time it was read."""
    return {f.encode_name: f for f in msgspec.structs.fields(cls)}


def decode_fields(
    cls: type[msgspec.Struct], raw: bytes | msgspec.Raw, path: str
) -> tuple[dict[str, Any], list[FieldError]]:
    """The fields of ``raw`` that decode as ``cls`` says (by name), and an error for each that
    does not: unknown, missing, or invalid."""
    try:
        parts = _raw_object.decode(raw)
    except DECODE_ERRORS as exc:
        return {}, field_errors(exc, path)
    except RecursionError:
        return {}, [FieldError(path or "$", TOO_DEEP)]
    known = _fields_of(cls)
    errors = [FieldError(join(path, name), "unknown field") for name in parts if name not in known]
    values: dict[str, Any] = {}
    for name, info in known.items():
        where = join(path, name)
        if name not in parts:
            if info.required:
                errors.append(FieldError(where, "missing required field"))
            continue
        try:
            values[info.name] = _decoder(info.type).decode(parts[name])
        except DECODE_ERRORS as exc:
            nested = _struct_in(info.type)
            errors.extend(decode_fields(nested, parts[name], where)[1] if nested else field_errors(exc, where))
        except RecursionError:
            errors.append(FieldError(where, TOO_DEEP))
    return values, errors
