"""Seen event ids: how a stage task folds a producer's retried event (same source and event
id) once, even when ingest let the retry through (its duplicate check is per ingest service).

A task keeps the id of each event it folded with when its record arrived (ingest's time, the
record's timestamp). Its changelog holds them one record per batch, named by the batch's last
input offset, so forgetting a batch's ids is one tombstone: they are forgotten once the batch's
newest arrival is ``window`` behind the newest the task took (``kafka_dedup_window_s``).
Arrival, not event time, as the embedded journal's and the aws runtime's windows: a producer
retries by the clock, so an event sent again is found however long before its key's newest it
happened (a backfill's, a late one's).

A task keeps at most :data:`MAX_IDS` ids: a flood of new ids, or a window set to days, would
otherwise grow a worker's memory (and its restore) without bound. Past it, the batches of the
oldest arrivals are forgotten early, and a retry of those events would be counted again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

log = logging.getLogger(__name__)

MAX_IDS = 1_000_000  # a task's ids: 160-250 bytes each in memory, as long as an id is

_entries = msgspec.msgpack.Decoder(list[tuple[str, float]])
_encode = msgspec.msgpack.Encoder().encode


def event_key(source: str, event_id: str) -> str:
    """An event's identity in seen ids and join keys."""
    return f"{source}\x1f{event_id}"


@dataclass
class SeenIds:
    ids: dict[str, float] = field(default_factory=dict)  # event key: arrival
    # record: newest arrival, its ids. Tuples of texts, which the garbage collector stops
    # walking (a list a batch kept an hour's worth, ~10^6, for every full collection to walk:
    # pauses of seconds in a worker at steady state)
    batches: dict[str, tuple[float, tuple[str, ...]]] = field(default_factory=dict)
    new: list[tuple[str, float]] = field(default_factory=list)  # not in the changelog yet
    dropped: list[str] = field(default_factory=list)  # records to tombstone
    max_ids: int = MAX_IDS

    def add(self, key: str, at: float) -> bool:
        """Note the event ``key`` that arrived ``at``; False if it was seen already (a retry)."""
        if key in self.ids:
            return False
        self.ids[key] = at
        self.new.append((key, at))
        return True

    def expire(self, arrived: float, window: float) -> None:
        """Forget the batches whose newest arrival is ``window`` before ``arrived`` (the newest
        record's the task took), and the oldest beyond :attr:`max_ids` ids."""
        for name, (newest, _) in list(self.batches.items()):
            if newest < arrived - window:
                self._forget(name)
        if len(self.ids) <= self.max_ids:
            return
        early = len(self.ids)
        for name, _ in sorted(self.batches.items(), key=lambda item: item[1][0]):
            if len(self.ids) <= self.max_ids:
                break
            self._forget(name)
        log.warning(
            "%d event ids forgotten before the duplicate window ended: a task keeps %d at most",
            early - len(self.ids),
            self.max_ids,
        )

    def _forget(self, name: str) -> None:
        for key in self.batches.pop(name)[1]:
            self.ids.pop(key, None)
        self.dropped.append(name)

    def changelog(self, name: str) -> list[tuple[str, bytes | None]]:
        """The changelog records since the last call: the ids added (as record ``name``) and
        the tombstones of batches forgotten."""
        out: list[tuple[str, bytes | None]] = [(batch, None) for batch in self.dropped]
        self.dropped = []
        if self.new:
            out.append((name, _encode(self.new)))
            self.batches[name] = (max(at for _, at in self.new), tuple(k for k, _ in self.new))
            self.new = []
        return out

    def rows(self) -> list[tuple[str, bytes]]:
        """Every record the changelog holds (once :meth:`changelog` took the new ids)."""
        return [(name, _encode([(k, self.ids[k]) for k in keys])) for name, (_, keys) in self.batches.items()]

    @classmethod
    def restore(cls, records: Mapping[str, bytes]) -> SeenIds:
        """From the changelog's records (by name)."""
        seen = cls()
        for name, value in records.items():
            entries = _entries.decode(value)
            seen.ids.update(entries)
            seen.batches[name] = (max(at for _, at in entries), tuple(k for k, _ in entries))
        return seen
