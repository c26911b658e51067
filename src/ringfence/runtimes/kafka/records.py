"""The records the kafka runtime's services exchange (versioned with their topics' names).

- events topic: key = the customer id, value = the event's stored JSON, timestamp = when
  ingest accepted it, header ``rf-join`` = the stages that send their values to the join for
  this event (comma-separated; absent: the customer stage evaluates the rules).
- the stages topic (every other keyed stage's input): no key, the partition of the stage's key
  (:func:`partition_for`), header ``rf-stage`` = the stage, header ``rf-items``, value = the
  :class:`StageItem` s of one ingest transaction for that stage and partition, in order
  (msgpack array). A record without ``rf-items`` is one event as in the events topic (a
  re-driven one). Ingest writes an event to all its topics in one transaction.
- join topic: no key, the partition of the customer stage's key (:func:`partition_for`), value
  = the :class:`Contribution` s a batch sends to that partition, in order (msgpack array).
- the changelog: no key (partition *p* holds task *p* of every stage and the join), value =
  one batch's :class:`~.changelog.Entry` of one task (msgpack): its stage, the state rows it
  changed, packed, and a snapshot part; names starting with ``@`` are the task's own
  (watermark, seen event ids, pending joins).
- alerts topic: key = rule and dedup key (one alert's signals stay in order), value =
  :class:`AlertRecord` (msgpack): an alert signal, or a late event to record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ringfence.engine.rules import AlertSignal
from ringfence.store.base import LateEvent

OFFSET_BITS = 40  # a Kafka offset fits; the partition goes above it
ITEM_BITS = 16  # an event of a stage or join record is named offset << 16 | its place in it
MAX_ITEMS = 1 << ITEM_BITS
RECORD_BYTES = 900_000  # a stage or join record's items, at most (the brokers' default limit is 1 MB)
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java clients' ``Utils.murmur2``), unsigned."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length & ~3
    for i in range(0, end, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[end + 2] << 16
    if tail >= 2:
        h ^= data[end + 1] << 8
    if tail >= 1:
        h = ((h ^ data[end]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java clients' partitioner (librdkafka's ``murmur2_random``, which
    every Ringfence producer uses) gives a record keyed ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def global_offset(partition: int, offset: int) -> int:
    """One number for a position in the partitioned events topic (stored evidence, late events)."""
    return (partition << OFFSET_BITS) | offset


def partition_of(offset: int) -> int:
    """The partition of a :func:`global_offset`."""
    return offset >> OFFSET_BITS


JOIN_HEADER = "rf-join"
ITEMS_HEADER = "rf-items"
STAGE_HEADER = "rf-stage"


def header(message: Any, name: str) -> bytes | None:
    """A consumed record's header ``name`` (None: absent or empty)."""
    return next((bytes(v) for k, v in message.headers() or () if k == name and v), None)


class StageItem(msgspec.Struct, frozen=True, array_like=True):
    """One event in a stage's record: its stored JSON, and the stages that send the join values."""

    body: bytes
    joined: list[str]


class Contribution(msgspec.Struct, frozen=True, array_like=True):
    """A stage's feature values for one event, sent to the join that evaluates its rules.
    The customer stage's also carries the event and where it is in the events topic."""

    event_key: str  # source and event id
    stage: str
    expected: list[str]  # every stage whose contribution the join waits for
    values: dict[str, Any]
    occurred_at: float
    body: bytes = b""
    offset: int = 0
    ingested_at: float = 0.0
    late: bool = False


class AlertRecord(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    signal: AlertSignal | None = None
    late: LateEvent | None = None


_contributions = msgspec.msgpack.Decoder(list[Contribution])
_items = msgspec.msgpack.Decoder(list[StageItem])
_alert = msgspec.msgpack.Decoder(AlertRecord)
_encoder = msgspec.msgpack.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def encode_in_records(items: list[Any], size: Callable[[Any], int]) -> list[bytes]:
    """``items`` as the values of records of at most ``MAX_ITEMS`` items and about
    ``RECORD_BYTES`` (by ``size``; an item bigger than that alone), in order."""
    out: list[bytes] = []
    start, total = 0, 0
    for i, item in enumerate(items):
        total += size(item)
        if i > start and (total > RECORD_BYTES or i - start >= MAX_ITEMS):
            out.append(_encoder.encode(items[start:i]))
            start, total = i, size(item)
    if start < len(items):
        out.append(_encoder.encode(items[start:]))
    return out


def decode_contributions(raw: bytes) -> list[Contribution]:
    return _contributions.decode(raw)


def decode_items(raw: bytes) -> list[StageItem]:
    return _items.decode(raw)


def decode_alert(raw: bytes) -> AlertRecord:
    return _alert.decode(raw)
