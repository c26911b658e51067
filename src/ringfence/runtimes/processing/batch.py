"""What one commit carries, in every runtime: the alerts, the state changes and the offsets
they reflect, the late events and the quarantined events of a run of records.

The driver assembles a :class:`Batch`; a runtime's committer writes all of it in one atomic
commit (a SQLite or PostgreSQL transaction, a Kafka transaction, a DynamoDB transaction), so
a crash keeps all or none of it and replaying the log from the committed offsets recreates
exactly what was lost, alert ids included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ringfence.engine.engine import Engine
from ringfence.engine.rules import AlertSignal
from ringfence.events.model import Event, decode_event
from ringfence.store.base import Checkpoint, LateEvent
from ringfence.store.quarantine import QuarantinedEvent
from ringfence.store.state_log import SnapshotPart

R = TypeVar("R")  # a runtime's record: a journal record, a Kafka message, a Kinesis record


def late_event(engine: Engine, event: Event, offset: int, partition: int, ingested_at: float) -> LateEvent | None:
    """``event`` as a late event if it is behind its partition's watermark (ask before
    processing it: a late event is processed, and recorded)."""
    watermark = engine.watermark(partition)
    return LateEvent.of(event, offset, watermark, ingested_at) if event.occurred_at < watermark else None


@dataclass
class Batch(Generic[R]):
    """One commit's worth of results. ``records`` are those its offsets move past: the
    records processed and the records quarantined."""

    records: list[R] = field(default_factory=list)
    signals: list[AlertSignal] = field(default_factory=list)
    changes: list[bytes] = field(default_factory=list)  # packed state rows (SQL stores' changelog)
    changed_rows: int = 0  # how many rows ``changes`` hold
    marks: dict[int, float] = field(default_factory=dict)  # partitions' newest event time after it
    late: list[LateEvent] = field(default_factory=list)
    quarantined: list[QuarantinedEvent] = field(default_factory=list)
    redriven: list[int] = field(default_factory=list)  # quarantine rows it ran again
    processed: int = 0  # events run through the engine
    rejected: int = 0  # records or events skipped as no valid input (counted when committed)
    duplicates: int = 0  # a producer's retries skipped (counted when committed)

    def fold(self, engine: Engine, event: Event, offset: int, partition: int, ingested_at: float) -> list[AlertSignal]:
        """Run ``event`` through ``engine``, noting its signals, whether it came late and its
        partition's newest event time; return its signals."""
        late = late_event(engine, event, offset, partition, ingested_at)
        signals = engine.process(event, offset, partition, ingested_at)
        self.signals += signals
        if late is not None:
            self.late.append(late)
        self.marks[partition] = engine.max_event_time[partition]
        self.processed += 1
        return signals

    def fold_stored(
        self,
        engine: Engine,
        bodies: Sequence[bytes],
        offsets: Sequence[int],
        partitions: Sequence[int],
        ingested_ats: Sequence[float],
    ) -> None:
        """:meth:`fold` of stored events (the log's JSON), in order, which the engine reads
        itself in one call. The caller takes the partitions' newest event times once the run is
        folded (:meth:`mark`): the compiled core hands them over as a copy, too dear per event."""
        signals, late = engine.process_raw_many(bodies, offsets, partitions, ingested_ats)
        self.signals += signals
        for i, behind in late:
            self.late.append(LateEvent.of(decode_event(bodies[i]), offsets[i], behind, ingested_ats[i]))
        self.processed += len(bodies)

    def mark(self, engine: Engine, partitions: Iterable[int]) -> None:
        """Note the newest event time of ``partitions`` after the events folded into them."""
        newest = engine.max_event_time
        self.marks.update({p: newest[p] for p in partitions})

    def quarantine(self, record: R, entry: QuarantinedEvent) -> None:
        """Move past ``record`` without its results, recording it as poison."""
        self.records.append(record)
        self.quarantined.append(entry)

    def merge(self, later: Batch[R]) -> None:
        """Append a later batch (the record-by-record retry gathers them into one commit)."""
        self.records += later.records
        self.signals += later.signals
        self.changes += later.changes
        self.changed_rows += later.changed_rows
        self.marks.update(later.marks)
        self.late += later.late
        self.quarantined += later.quarantined
        self.redriven += later.redriven
        self.processed += later.processed
        self.rejected += later.rejected
        self.duplicates += later.duplicates

    @property
    def empty(self) -> bool:
        """Nothing to commit but, at most, offsets."""
        return not (self.signals or self.changes or self.late or self.quarantined or self.redriven)

    def take_changes(self, engine: Engine) -> None:
        """Take the state rows ``engine`` changed, packed (the state codec runs here)."""
        if (packed := engine.take_changes_packed()) is not None:
            self.changes.append(packed[0])
            self.changed_rows += packed[1]

    def checkpoint(self, name: str, offset: int, snapshot: SnapshotPart | None = None) -> Checkpoint:
        """What a SQL store commits with the signals: state changes (and a ``snapshot`` part),
        watermarks, late and poison events and the ``offset`` of processor ``name``."""
        return Checkpoint(
            name,
            offset,
            self.changes,
            self.marks,
            self.late,
            self.quarantined,
            self.redriven,
            self.changed_rows,
            snapshot,
        )
