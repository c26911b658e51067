"""State rows packed for storage: one msgpack array of ``(persisted name, key, state or None)``.

The SQL store's changelog entries and snapshot parts hold them. The compiled core writes and
reads the same bytes (``native/src/packed.rs``), so a store written by either engine restores
into the other. A row with no state says the state is gone (expired, or dropped by its
definition): applied in order, the rows leave each (name, key) as its last row says.
"""

from __future__ import annotations

import msgspec

StateRow = tuple[str, str, bytes | None]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, str, bytes | None]]).decode


def pack_rows(rows: list[StateRow]) -> bytes:
    return _encode(rows)


def unpack_rows(packed: bytes) -> list[StateRow]:
    """The rows of ``packed``; ``msgspec.DecodeError`` names what is malformed."""
    return _decode(packed)
