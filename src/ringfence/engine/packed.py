"""State rows packed for storage: ``(persisted name, key, state or None)`` rows in msgpack.

The SQL store's changelog entries and snapshot parts and the Kafka changelog hold them. The
compiled core writes and reads the same bytes (``native/src/packed.rs``), so a store written by
either engine restores into the other. A row with no state says the state is gone (expired,
or dropped by its definition): applied in order, the rows leave each (name, key) as its last
row says.

Two layouts. Version 2, written: ``[2, [name, ...], [key, name index, state or None, ...],
...]``, the names once and then a record a key, its rows in order; an engine's changes come a
record at a time, so a row is about half the bytes of version 1. Version 1, still read (stores
written before version 2): ``[[name, key, state or None], ...]``.
"""

from __future__ import annotations

from typing import Any

import msgspec

StateRow = tuple[str, str, bytes | None]
VERSION = 2

_encode = msgspec.msgpack.Encoder().encode
_decode_v1 = msgspec.msgpack.Decoder(list[tuple[str, str, bytes | None]]).decode
_decode_v2 = msgspec.msgpack.Decoder(list[Any]).decode
_ARRAY_HEADER = {0xDC: 3, 0xDD: 5}  # array16, array32: the bytes before their first element


def pack_rows(rows: list[StateRow]) -> bytes:
    """``rows`` in version 2, in order: consecutive rows of one key make one record."""
    names: dict[str, int] = {}
    records: list[list[Any]] = []
    last: str | None = None
    for name, key, state in rows:
        if key != last or not records:
            records.append([key])
            last = key
        records[-1] += (names.setdefault(name, len(names)), state)
    return _encode([VERSION, list(names), *records])


def unpack_rows(packed: bytes) -> list[StateRow]:
    """The rows of ``packed`` (either version); ``msgspec.DecodeError`` names what is malformed."""
    if not _is_v2(packed):
        return _decode_v1(packed)
    top = _decode_v2(packed)
    names = top[1] if len(top) > 1 else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise msgspec.DecodeError("malformed packed state rows: no list of names")
    rows: list[StateRow] = []
    for record in top[2:]:
        if not isinstance(record, list) or len(record) % 2 == 0 or not isinstance(record[0], str):
            raise msgspec.DecodeError("malformed packed state rows: a record is not a key and (name, state) pairs")
        key = record[0]
        for at in range(1, len(record), 2):
            index, state = record[at], record[at + 1]
            if type(index) is not int or not 0 <= index < len(names):
                raise msgspec.DecodeError("malformed packed state rows: a name's index is past the names")
            if state is not None and type(state) is not bytes:
                raise msgspec.DecodeError("malformed packed state rows: a state is not bytes")
            rows.append((names[index], key, state))
    return rows


def _is_v2(packed: bytes) -> bool:
    """Whether ``packed`` is version 2: an array whose first element is the number 2 (version
    1's first element is a row, an array)."""
    if not packed:
        return False
    first = 1 if 0x90 <= packed[0] <= 0x9F else _ARRAY_HEADER.get(packed[0], 0)
    return first > 0 and len(packed) > first and packed[first] == VERSION
