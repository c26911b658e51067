"""What processing hands a SQL store (SQLite; PostgreSQL for the kafka runtime): checkpoints, late events."""

from __future__ import annotations

from dataclasses import dataclass, field

from ringfence.events.model import Event
from ringfence.store.quarantine import QuarantinedEvent
from ringfence.store.state_log import SnapshotPart


@dataclass(frozen=True)
class LateEvent:
    """An event that arrived behind its partition's watermark (processed, and recorded)."""

    offset: int
    event_id: str
    source: str
    type: str
    customer_id: str | None
    occurred_at: float
    watermark: float
    ingested_at: float

    @classmethod
    def of(cls, event: Event, offset: int, watermark: float, ingested_at: float) -> LateEvent:
        return cls(
            offset,
            event.event_id,
            event.source,
            event.type,
            event.customer_id,
            event.occurred_at,
            watermark,
            ingested_at,
        )


@dataclass
class Checkpoint:
    """What a SQL store commits atomically with the alerts of a batch: the offset of
    processor ``name`` and what its events left (see :mod:`ringfence.runtimes.processing`)."""

    name: str
    offset: int
    state_changes: list[bytes] = field(default_factory=list)  # packed rows (ringfence.engine.packed)
    watermarks: dict[int, float] = field(default_factory=dict)
    late_events: list[LateEvent] = field(default_factory=list)
    quarantined: list[QuarantinedEvent] = field(default_factory=list)  # poison events of the batch
    redriven: list[int] = field(default_factory=list)  # quarantine rows the batch re-ran
    state_rows: int = 0  # how many rows state_changes hold
    snapshot: SnapshotPart | None = None  # a part of the state snapshot being written behind
    # applied only while the stored offset is at most this (the batch's first): a consumer that
    # lost its partitions to another (a pause past its session) must not apply what that one did
    after: int | None = None
