"""A task: one partition of a stage's input topic (or of the join topic), as a worker holds
it: the stage's engine over that partition's keys, its event time, the ids of the events it
folded and (join) the events waiting for their stages. Everything it holds is in its
changelog partition (same number, see :mod:`.topics`): records by (name, key), the engine's
state under its own names and the task's own under names starting with ``@``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.engine.engine import Engine, EventContext
from ringfence.engine.native import make_engine
from ringfence.engine.stages import CUSTOMER, JOIN, Stage, StagePlan, run_stage
from ringfence.events.model import Event
from ringfence.runtimes.kafka import join, records
from ringfence.runtimes.kafka.seen import SeenIds, event_key
from ringfence.runtimes.processing import Batch, EventClock, late_event

log = logging.getLogger("ringfence.kafka.process")

TaskId = tuple[str, int]  # (input topic, partition)
EVENT_TIME = "@watermark"  # the task's newest event time and its arrival (idle timers extrapolate from both)
SEEN = "@seen"
PENDING = "@pending"

_event_time = msgspec.msgpack.Decoder(tuple[float, float])
_encode = msgspec.msgpack.Encoder().encode


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
    last_offset: int = -1  # of the last event folded: names the changelog record of the batch's seen ids
    time_written: tuple[float | None, float] = (None, 0.0)  # the event time the changelog holds

    @property
    def is_join(self) -> bool:
        return self.stage.name == JOIN

    def fold(
        self, plan: StagePlan, event: Event, message: Any, batch: Batch[Any]
    ) -> tuple[bytes, records.Contribution] | None:
        """Fold a stage's event (``message``, not seen before) into the engine, adding its
        signals and, in the customer stage, whether it came late to ``batch``; return what it
        sends to the join, if anything: the values, and their key (the customer stage's)."""
        self.last_offset = message.offset()
        ingested_at = message.timestamp()[1] / 1000.0
        self.event_time.arrived_at = ingested_at
        joined = _header(message, records.JOIN_HEADER)
        customer = self.stage.name == CUSTOMER
        # evidence points into the events topic; other stages' topics hold copies
        offset = records.global_offset(self.partition, message.offset()) if customer else -1
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
            event_key(event.source, event.event_id), self.stage.name, joined, values, event.occurred_at
        )
        if customer:
            part = msgspec.structs.replace(
                part, body=message.value(), offset=offset, ingested_at=ingested_at, late=late is not None
            )
        return (plan.stages[0].key(event, EventContext(event, self.engine)) or "").encode(), part

    def join(self, plan: StagePlan, part: records.Contribution, batch: Batch[Any]) -> None:
        """Collect a contribution; once its event's last came, evaluate the event's rules."""
        parts = self.joins.add(part)
        if parts is not None:
            batch.signals += join.evaluate(plan, self.stage, self.engine, self.partition, parts)

    def expired(self, watermark: float) -> None:
        self.seen.expire(watermark, self.dedup_window_s)
        for key in self.joins.expire(watermark):
            log.warning("join gave up on event %s: a stage never sent its values", key)

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """The changelog records (key, value or tombstone) of what changed since the last call
        (the state codec runs here)."""
        out = [(records.state_key(name, key), state) for name, key, state in self.engine.take_changes()]
        out += [(records.state_key(SEEN, name), value) for name, value in self.seen.changelog(str(self.last_offset))]
        out += [(records.state_key(PENDING, key), value) for key, value in self.joins.changelog()]
        written = (self.engine.max_event_time.get(self.partition), self.event_time.arrived_at)
        if written[0] is not None and written != self.time_written:
            out.append((records.state_key(EVENT_TIME, ""), _encode(written)))
            self.time_written = written
        return out

    @classmethod
    def restore(
        cls,
        stage: Stage,
        partition: int,
        rows: Mapping[tuple[str, str], bytes],
        lateness_s: float,
        dedup_window_s: float,
        now: float,
        *,
        engine_kind: str = "auto",
    ) -> Task:
        """The task its changelog partition's ``rows`` (newest value by key) describe, run by the
        engine the ``engine`` setting (``engine_kind``) names."""
        engine = make_engine(stage.pack, lateness_s, engine=engine_kind)
        own: dict[str, dict[str, bytes]] = {EVENT_TIME: {}, SEEN: {}, PENDING: {}}
        for (name, key), value in rows.items():
            if name in own:
                own[name][key] = value
        marks, arrived_at = {}, 0.0
        if "" in own[EVENT_TIME]:
            marks[partition], arrived_at = _event_time.decode(own[EVENT_TIME][""])
        engine.restore(((n, k, v) for (n, k), v in rows.items() if not n.startswith("@")), marks)
        engine.take_changes()
        return cls(
            stage,
            partition,
            engine,
            EventClock(now, arrived_at),  # its backlog comes first: no idle timer fires at once
            SeenIds.restore(own[SEEN]),
            join.PendingJoins.restore(own[PENDING]),
            dedup_window_s,
            time_written=(marks.get(partition), arrived_at),
        )


def _header(message: Any, name: str) -> list[str]:
    for key, value in message.headers() or ():
        if key == name and value:
            return str(value.decode()).split(",")
    return []
