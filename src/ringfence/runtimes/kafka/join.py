"""The join: where the rules of an event whose features several stages keep are evaluated
(see :mod:`ringfence.engine.stages`). Each stage that owns features the event's rules read
sends its values (a :class:`~.records.Contribution`) to the join task keyed like the
customer stage; once the last of them came, the join evaluates the rules. Contributions
still waiting are part of the task's state, in its changelog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from ringfence.engine.engine import Engine
from ringfence.engine.rules import AlertSignal
from ringfence.engine.stages import CUSTOMER, Stage, StagePlan, run_stage
from ringfence.events.model import decode_event
from ringfence.runtimes.kafka.records import Contribution

HORIZON_S = 3600.0  # of arrival: how long a join waits for an event's last stage before giving up
Parts = dict[str, Contribution]  # an event's contributions, by stage

_parts = msgspec.msgpack.Decoder(list[Contribution])
_encode = msgspec.msgpack.Encoder().encode


@dataclass
class PendingJoins:
    """The events a join task waits on, and which of them its changelog holds."""

    pending: dict[str, Parts] = field(default_factory=dict)  # by event key
    changed: dict[str, Parts | None] = field(default_factory=dict)  # since the last changelog write
    written: set[str] = field(default_factory=set)  # in the changelog

    def add(self, part: Contribution) -> Parts | None:
        """Collect ``part``: all of its event's contributions once the last came, else None."""
        parts = self.pending.setdefault(part.event_key, {})
        parts[part.stage] = part
        if not set(part.expected) <= set(parts):
            self.changed[part.event_key] = parts
            return None
        del self.pending[part.event_key]
        if part.event_key in self.written:
            self.written.discard(part.event_key)
            self.changed[part.event_key] = None
        else:  # begun and completed within one batch: the changelog never held it
            self.changed.pop(part.event_key, None)
        return parts

    def expire(self, arrived: float) -> list[str]:
        """Give up on the events a stage never sent its values for, ingested ``HORIZON_S``
        before ``arrived`` (the newest contribution's ingest); return their keys. By arrival,
        not event time: a backfill's events, hours old, are joined as any others."""
        stale = [k for k, parts in self.pending.items() if _arrival(parts) < arrived - HORIZON_S]
        for key in stale:
            del self.pending[key]
            self.changed[key] = None
        return stale

    def changelog(self) -> list[tuple[str, bytes | None]]:
        """The changelog records since the last call: waiting events, and tombstones."""
        out = [(key, None if parts is None else _encode(list(parts.values()))) for key, parts in self.changed.items()]
        self.written |= {key for key, parts in self.changed.items() if parts is not None}
        self.changed = {}
        return out

    def rows(self) -> list[tuple[str, bytes]]:
        """Every record the changelog holds (once :meth:`changelog` took the changes)."""
        return [(key, _encode(list(parts.values()))) for key, parts in self.pending.items()]

    @classmethod
    def restore(cls, records: Mapping[str, bytes]) -> PendingJoins:
        """From the changelog's records (by event key)."""
        pending = {key: {c.stage: c for c in _parts.decode(value)} for key, value in records.items()}
        return cls(pending, written=set(pending))


def _arrival(parts: Parts) -> float:
    """When an event's contributions were ingested (all alike); their event time for those
    written before contributions carried it (2026-12-05), which only the customer's did."""
    return max((c.ingested_at or c.occurred_at) for c in parts.values())


def evaluate(plan: StagePlan, stage: Stage, engine: Engine, partition: int, parts: Parts) -> list[AlertSignal]:
    """The rules' signals for an event all of whose stages sent their values."""
    first = parts[CUSTOMER]
    event = decode_event(first.body)
    values = {k: v for p in parts.values() for k, v in p.values.items()}
    position = (first.offset, partition, first.ingested_at)
    signals, _ = run_stage(plan, stage, engine, event, position, values, final=True)
    # late as the customer stage, which holds the event's partition watermark, judged it
    return [msgspec.structs.replace(s, late=first.late) for s in signals]
