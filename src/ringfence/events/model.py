"""The normalised event every part of Ringfence after ingest works with."""

from __future__ import annotations

from typing import Any

import msgspec


class Event(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A validated, masked event.

    ``occurred_at`` is seconds since the epoch (UTC). Money fields of ``data`` hold exact
    decimal strings in the currency's minor unit (``"12.50"``); account numbers are masked.
    """

    event_id: str
    type: str
    occurred_at: float
    source: str
    data: dict[str, Any]
    customer_id: str | None = None
    account_id: str | None = None


# the data field that orders an event without a customer (the service it is about), as the
# customer orders the others: what a log partitions events by
PARTITION_FIELD = "service"

# an event as a log stores it: its event_id, source, partition and JSON (encode_event's)
StoredEvent = tuple[str, str, int, bytes]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """The stored form of an event (JSON)."""
    return _encoder.encode(event)


def decode_event(raw: bytes) -> Event:
    """An event from its stored form."""
    return _decoder.decode(raw)
