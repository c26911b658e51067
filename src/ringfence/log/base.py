"""The partitioned, durable event log every runtime writes to and reads from."""

from __future__ import annotations

import zlib
from typing import Protocol

import msgspec

from ringfence.events.model import PARTITION_FIELD, Event, StoredEvent, encode_event


class Record(msgspec.Struct, frozen=True, gc=False):
    """One event in the log: its offset (unique, increasing), partition and stored body.

    A struct, not a dataclass: the processor makes one per event read, and a frozen
    dataclass's constructor cost several times more."""

    offset: int
    partition: int
    ingested_at: float
    body: bytes


def partition_for(event: Event, partitions: int) -> int:
    """The partition of an event: by customer, so one customer's events stay in order."""
    return partition_of_key(str(event.customer_id or event.data.get(PARTITION_FIELD) or ""), partitions)


def stored_event(event: Event, partitions: int) -> StoredEvent:
    """``event`` as a log of ``partitions`` stores it (ingest's fast path makes the same from
    an event's JSON without an Event: ``ringfence.events.fastpath.fast_stored``)."""
    return event.event_id, event.source, partition_for(event, partitions), encode_event(event)


def partition_of_key(key: str, partitions: int) -> int:
    """The partition that holds the events of partition key ``key`` (a customer id)."""
    return zlib.crc32(key.encode()) % partitions


class EventLog(Protocol):
    """What a log backend provides. Writers call ``append``; the processor reads."""

    partitions: int

    def append(self, events: list[Event], ingested_at: float) -> list[int | None]:
        """Durably append events; return each one's offset, or None for a duplicate."""
        ...

    def read(self, after: int, limit: int) -> list[Record]:
        """Up to ``limit`` records with offset > ``after``, in offset order."""
        ...

    def head(self) -> int:
        """The highest offset written so far (0 when empty)."""
        ...

    def delete_older_than(self, ingested_before: float, processed_up_to: int, max_rows: int) -> int:
        """Retention: drop the oldest processed records ingested before the cut-off, up to
        ``max_rows`` of those deleted one by one (a whole segment may go at once); return how
        many (fewer than ``max_rows``: none are left to drop)."""
        ...

    def close(self) -> None: ...
