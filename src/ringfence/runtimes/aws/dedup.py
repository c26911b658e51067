"""A producer's retried event on the aws runtime: found by the recent event ids its partition
key's item keeps.

Kinesis keeps a partition key's records in order on one shard, and the processor loads and
writes that key's item with every chunk holding its events (:mod:`.state`). So the item can
carry the ids of the key's recent events: a retried event (same ``source`` and ``event_id``,
a new record) finds its id there and is skipped, with no item of its own (a marker item per
event, before 2026-12-04, cost 2 of an event's 7 write units). Ingest reads the same ids to
report duplicates in its 202.

An id is 8 bytes of a BLAKE2b digest of the event's key (a false match needs 2^64 tries
per id kept) and when its record reached the stream, in whole seconds: 12 bytes in all. A
key keeps the ids of the events that arrived within :data:`WINDOW_S` of its newest arrival,
at most :data:`KEPT` of them, the latest to arrive: a busy key (a service's telemetry) keeps
its last :data:`KEPT` events'. Arrival, not event time, as the embedded journal's window is
of ingest: an event that happened long before its key's newest is still found when sent again.

A retried *batch* (a Lambda retry, a zombie invocation) is not this module's: the shard's
progress item says which records are committed (:mod:`.state`).
"""

from __future__ import annotations

import hashlib
import struct

WINDOW_S = 3600  # of arrival, as the embedded journal's default segment span
KEPT = 64  # ids a key keeps at most: 768 bytes
_ID = struct.Struct(">8sI")


def digest(event_key: str) -> bytes:
    """The 8 bytes an event is known by in its partition key's item."""
    return hashlib.blake2b(event_key.encode(), digest_size=8).digest()


def ids_of(blob: bytes) -> dict[bytes, int]:
    """The ids a key's item keeps: digest -> arrival (whole seconds)."""
    return dict(_ID.iter_unpack(blob[: len(blob) - len(blob) % _ID.size]))


def with_ids(blob: bytes, new: list[tuple[bytes, int]]) -> bytes:
    """``blob`` (ids in the order they arrived) with ``new`` ids added after them: those
    within the window of the newest arrival kept, the last :data:`KEPT` to arrive at most."""
    ids = ids_of(blob)
    for d, t in new:
        ids.pop(d, None)
        ids[d] = t
    if not ids:
        return b""
    newest = max(ids.values())
    kept = [(d, t) for d, t in ids.items() if t >= newest - WINDOW_S][-KEPT:]
    return b"".join(_ID.pack(d, t) for d, t in kept)
