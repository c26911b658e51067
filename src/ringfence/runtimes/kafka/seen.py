"""Seen event ids: how a stage task folds a producer's retried event (same source and event
id) once, even when ingest let the retry through (its duplicate check is per ingest service).

A task keeps the id of each event it folded with when its record arrived (ingest's time, the
record's timestamp). Its changelog holds them one record per batch, named by the batch's last
input offset, so forgetting a batch's ids is one tombstone: they are forgotten once the batch's
newest arrival is ``window`` behind the newest the task took (``kafka_dedup_window_s``).
Arrival, not event time, as the embedded journal's and the aws runtime's windows: a producer
retries by the clock, so an event sent again is found however long before its key's newest it
happened (a backfill's, a late one's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

_entries = msgspec.msgpack.Decoder(list[tuple[str, float]])
_encode = msgspec.msgpack.Encoder().encode


def event_key(source: str, event_id: str) -> str:
    """An event's identity in seen ids and join keys."""
    return f"{source}\x1f{event_id}"


@dataclass
class SeenIds:
    ids: dict[str, float] = field(default_factory=dict)  # event key: arrival
    batches: dict[str, tuple[float, list[str]]] = field(default_factory=dict)  # record: newest arrival, its ids
    new: list[tuple[str, float]] = field(default_factory=list)  # not in the changelog yet
    dropped: list[str] = field(default_factory=list)  # records to tombstone

    def add(self, key: str, at: float) -> bool:
        """Note the event ``key`` that arrived ``at``; False if it was seen already (a retry)."""
        if key in self.ids:
            return False
        self.ids[key] = at
        self.new.append((key, at))
        return True

    def expire(self, arrived: float, window: float) -> None:
        """Forget the batches whose newest arrival is ``window`` before ``arrived`` (the newest
        record's the task took)."""
        for name, (newest, keys) in list(self.batches.items()):
            if newest < arrived - window:
                for key in keys:
                    self.ids.pop(key, None)
                del self.batches[name]
                self.dropped.append(name)

    def changelog(self, name: str) -> list[tuple[str, bytes | None]]:
        """The changelog records since the last call: the ids added (as record ``name``) and
        the tombstones of batches forgotten."""
        out: list[tuple[str, bytes | None]] = [(batch, None) for batch in self.dropped]
        self.dropped = []
        if self.new:
            out.append((name, _encode(self.new)))
            self.batches[name] = (max(at for _, at in self.new), [k for k, _ in self.new])
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
            seen.batches[name] = (max(at for _, at in entries), [k for k, _ in entries])
        return seen
