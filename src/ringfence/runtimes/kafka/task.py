"""A task: one stage's (or the join's) share of one partition of its input topic, as a worker
holds it: the stage's engine over that partition's keys, its event time, the ids of the events it
folded and (join) the events waiting for their stages. Everything it holds is in the
changelog's partition of the same number (see :mod:`.topics`), in the entries naming its stage
(one per batch, :mod:`.changelog`): state rows by (name, key), the engine's under its own
names and the task's own under names starting with ``@``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.engine.engine import Engine, EventContext
from ringfence.engine.native import make_engine
from ringfence.engine.packed import StateRow
from ringfence.engine.stages import CUSTOMER, JOIN, Stage, StagePlan, run_stage
from ringfence.events.model import Event
from ringfence.runtimes.kafka import join, records
from ringfence.runtimes.kafka.changelog import Entry, Replayed, TaskLog
from ringfence.runtimes.kafka.seen import SeenIds, event_key
from ringfence.runtimes.processing import Batch, EventClock, late_event

log = logging.getLogger("ringfence.kafka.process")

TaskId = tuple[str, int]  # (stage, or join, and partition)
Source = tuple[str, int]  # an input partition: (topic, partition); the stages topic's feeds several tasks
EVENT_TIME = "@watermark"  # the task's newest event time and its arrival (idle timers extrapolate from both)
SEEN = "@seen"
PENDING = "@pending"

_event_time = msgspec.msgpack.Decoder(tuple[float, float])
_encode = msgspec.msgpack.Encoder().encode


class JoinFailed(Exception):
    """An event's rules failed in the join: its contributions, and why."""

    def __init__(self, parts: list[records.Contribution], error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.parts = parts
        self.error = error


@dataclass
class Task:
    """One partition of one stage; see the module docstring."""

    stage: Stage
    partition: int
    engine: Engine
    event_time: EventClock
    seen: SeenIds
    joins: join.PendingJoins
    dedup_window_s: float
    log: TaskLog
    last_offset: int = -1  # of the last record folded: names the row of the batch's seen ids
    time_written: tuple[float | None, float] = (None, 0.0)  # the event time the changelog holds
    tainted: bool = False  # a fold failed: the engine holds what it left until the task is restored
    _taken_at: int = -1  # the record of the last take_changes
    _takes: int = 0  # takes of it before

    @property
    def is_join(self) -> bool:
        return self.stage.name == JOIN

    def fold(
        self, plan: StagePlan, event: Event, body: bytes, joined: list[str], at: tuple[int, float], batch: Batch[Any]
    ) -> tuple[bytes, records.Contribution] | None:
        """Fold a stage's event (stored as ``body``, not seen before; ``joined``: the stages
        that send the join values; ``at``: its record's offset and ingest time) into the engine,
        adding its signals and, in the customer stage, whether it came late to ``batch``; return
        what it sends to the join, if anything: the values, and their key (the customer stage's)."""
        self.last_offset, ingested_at = at
        self.event_time.arrived_at = ingested_at
        customer = self.stage.name == CUSTOMER
        # evidence points into the events topic; the stages topic holds copies
        offset = records.global_offset(self.partition, self.last_offset) if customer else -1
        late = late_event(self.engine, event, offset, self.partition, ingested_at) if customer else None
        if late is not None:
            batch.late.append(late)
        contributes = self.stage.name in joined
        position = (offset, self.partition, ingested_at)
        signals, values = run_stage(
            plan, self.stage, self.engine, event, position, {}, customer and not joined, contributes
        )
        batch.signals += signals
        if not contributes:
            return None
        part = records.Contribution(
            event_key(event.source, event.event_id),
            self.stage.name,
            joined,
            values,
            event.occurred_at,
            ingested_at=ingested_at,  # how long the join waits for the others is counted from it
        )
        if customer:
            part = msgspec.structs.replace(part, body=body, offset=offset, late=late is not None)
        return (plan.stages[0].key(event, EventContext(event, self.engine)) or "").encode(), part

    def join(self, plan: StagePlan, part: records.Contribution, batch: Batch[Any]) -> None:
        """Collect a contribution; once its event's last came, evaluate the event's rules.
        Rules that fail raise :class:`JoinFailed` with the event's contributions: the join's
        engine holds no state (the rules alone), so the failure changed nothing but the
        waiting joins, which no longer hold the event."""
        self.event_time.arrived_at = max(self.event_time.arrived_at, part.ingested_at)
        parts = self.joins.add(part)
        if parts is not None:
            try:
                batch.signals += join.evaluate(plan, self.stage, self.engine, self.partition, parts)
            except Exception as error:
                raise JoinFailed(list(parts.values()), error) from error

    def expired(self, watermark: float) -> None:
        """Forget seen ids and give up on joins by arrival (``watermark``, event time, is the
        engine's measure, not theirs): an old event sent now (a backfill's) and its retry are
        minutes apart, however long ago it happened."""
        arrived = self.event_time.arrived_at
        self.seen.expire(arrived, self.dedup_window_s)
        for key in self.joins.expire(arrived):
            log.warning("join gave up on event %s: a stage never sent its values", key)

    def take_changes(self) -> None:
        """Note what the records folded since the last call changed, for the batch's changelog
        entry (the state codec runs here)."""
        # the row of the ids folded since the last call: named by the last record's offset and, as
        # a record of several events may be taken event by event, the how-manieth take of it
        self._takes = self._takes + 1 if self.last_offset == self._taken_at else 0
        self._taken_at = self.last_offset
        name = f"{self.last_offset}" if not self._takes else f"{self.last_offset}.{self._takes}"
        if self.stage.name not in (CUSTOMER, JOIN):  # offsets of the stages topic: never those of a
            name = f"s{name}"  # stage's own topic of before, whose rows a restored task may still hold
        own: list[StateRow] = [(SEEN, row, value) for row, value in self.seen.changelog(name)]
        own += [(PENDING, key, value) for key, value in self.joins.changelog()]
        written = self._event_time()
        if written[0] is not None and written != self.time_written:
            own.append((EVENT_TIME, "", _encode(written)))
            self.time_written = written
        self.log.take(self.engine, own)

    def entry(self) -> Entry | None:
        """The changelog entry of the batch in hand (None: nothing changed, no snapshot due)."""
        own_held = len(self.seen.batches) + len(self.joins.pending) + 1
        entry = self.log.entry(self.engine, self._own_rows, own_held, tainted=self.tainted)
        return None if entry is None else msgspec.structs.replace(entry, stage=self.stage.name)

    def _event_time(self) -> tuple[float | None, float]:
        return (self.engine.max_event_time.get(self.partition), self.event_time.arrived_at)

    def _own_rows(self) -> list[StateRow]:
        """Every row of the task's own as the changelog holds it (a snapshot's first part carries them)."""
        rows: list[StateRow] = [(SEEN, name, value) for name, value in self.seen.rows()]
        rows += [(PENDING, key, value) for key, value in self.joins.rows()]
        if self.time_written[0] is not None:
            rows.append((EVENT_TIME, "", _encode(self.time_written)))
        return rows

    @classmethod
    def restore(
        cls,
        stage: Stage,
        partition: int,
        replayed: Replayed,
        lateness_s: float,
        dedup_window_s: float,
        now: float,
        *,
        engine_kind: str = "auto",
        min_log_rows: int,
    ) -> tuple[Task, int]:
        """The task its changelog partition (``replayed``) describes, run by the engine the
        ``engine`` setting (``engine_kind``) names; and how many rows it applied."""
        engine = make_engine(stage.pack, lateness_s, engine=engine_kind)
        own: dict[str, dict[str, bytes]] = {EVENT_TIME: {}, SEEN: {}, PENDING: {}}
        for (name, key), value in replayed.own.items():
            if name in own:
                own[name][key] = value
        marks, arrived_at = {}, 0.0
        if "" in own[EVENT_TIME]:
            marks[partition], arrived_at = _event_time.decode(own[EVENT_TIME][""])
        rows = sum(engine.restore_packed(packed) for packed in replayed.engine)
        engine.restore((), marks)
        engine.take_changes()
        task = cls(
            stage,
            partition,
            engine,
            EventClock(now, arrived_at),  # its backlog comes first: no idle timer fires at once
            SeenIds.restore(own[SEEN]),
            join.PendingJoins.restore(own[PENDING]),
            dedup_window_s,
            TaskLog.resumed(replayed, min_log_rows),
            time_written=(marks.get(partition), arrived_at),
        )
        return task, rows + len(replayed.own)


def stage_items(message: Any) -> list[tuple[int | None, records.StageItem]]:
    """The events of a stage's record, each with its place in it (None: a record of one event,
    the events topic's or a re-driven one)."""
    if records.header(message, records.ITEMS_HEADER):
        return list(enumerate(records.decode_items(message.value())))
    joined = records.header(message, records.JOIN_HEADER)
    return [(None, records.StageItem(message.value(), joined.decode().split(",") if joined else []))]
