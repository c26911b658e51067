"""The records the kafka runtime's services exchange (versioned with their topics' names).

- events topic: key = the customer (partition key), value = the event's stored JSON, the
  record's timestamp = when ingest accepted it.
- a stage's input topic: key = the stage's key, value = :class:`Staged` (msgpack).
- a changelog: key = (state name, state key) (msgpack), value = the engine's encoded state,
  or a tombstone; names starting with ``@`` are the task's own (watermark, seen event ids).
- alerts topic: key = rule and dedup key (one alert's signals stay in order), value =
  :class:`AlertRecord` (msgpack): an alert signal, or a late event to record.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ringfence.engine.rules import AlertSignal
from ringfence.store.base import LateEvent

OFFSET_BITS = 40  # a Kafka offset fits; the partition goes above it


def global_offset(partition: int, offset: int) -> int:
    """One number for a position in the partitioned events topic (stored evidence, late events)."""
    return (partition << OFFSET_BITS) | offset


class Staged(msgspec.Struct, frozen=True, array_like=True):
    """An event on its way through the keyed stages, with the feature values computed so far."""

    body: bytes  # the event's stored JSON
    offset: int  # its global_offset in the events topic
    ingested_at: float
    carried: dict[str, Any]
    rest: list[str]  # the stages it still visits after the one it is sent to


class AlertRecord(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    signal: AlertSignal | None = None
    late: LateEvent | None = None


_staged = msgspec.msgpack.Decoder(Staged)
_alert = msgspec.msgpack.Decoder(AlertRecord)
_state_key = msgspec.msgpack.Decoder(tuple[str, str])
_encoder = msgspec.msgpack.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_staged(raw: bytes) -> Staged:
    return _staged.decode(raw)


def decode_alert(raw: bytes) -> AlertRecord:
    return _alert.decode(raw)


def state_key(name: str, key: str) -> bytes:
    return _encoder.encode((name, key))


def decode_state_key(raw: bytes) -> tuple[str, str]:
    return _state_key.decode(raw)
