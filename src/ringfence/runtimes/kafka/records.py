"""The records the kafka runtime's services exchange (versioned with their topics' names).

- events topic and every stage's topic: key = the stage's key, value = the event's stored
  JSON, timestamp = when ingest accepted it, header ``rf-join`` = the stages that send their
  values to the join for this event (comma-separated; absent: the customer stage evaluates
  the rules). Ingest writes an event to all its topics in one transaction.
- join topic: key = the customer stage's key, value = :class:`Contribution` (msgpack).
- a changelog: key = (state name, state key) (msgpack), value = the engine's encoded state,
  or a tombstone; names starting with ``@`` are the task's own (watermark, seen event ids,
  pending joins).
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


def partition_of(offset: int) -> int:
    """The partition of a :func:`global_offset`."""
    return offset >> OFFSET_BITS


JOIN_HEADER = "rf-join"


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


_contribution = msgspec.msgpack.Decoder(Contribution)
_alert = msgspec.msgpack.Decoder(AlertRecord)
_state_key = msgspec.msgpack.Decoder(tuple[str, str])
_encoder = msgspec.msgpack.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_contribution(raw: bytes) -> Contribution:
    return _contribution.decode(raw)


def decode_alert(raw: bytes) -> AlertRecord:
    return _alert.decode(raw)


def state_key(name: str, key: str) -> bytes:
    return _encoder.encode((name, key))


def decode_state_key(raw: bytes) -> tuple[str, str]:
    return _state_key.decode(raw)
