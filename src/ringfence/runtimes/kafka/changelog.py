"""A task's changelog: one record per committed batch, and snapshots written behind.

Each batch appends one :class:`Entry` to its task's changelog partition, in the batch's
transaction: every state row the batch changed, packed as the compiled core packs them
(:mod:`ringfence.engine.packed`), the task's own rows it changed (seen event ids, waiting
joins, event time), and, when one is being written, a part of a snapshot. So the records a
batch writes do not grow with the keys it touched, as one record per (state, key) did.

Snapshots follow the embedded runtime's schedule (:class:`ringfence.store.state_log.StateLog`):
a generation begins once the log since the last one holds enough rows, and is written a part
at a time with the batches that follow. Once its last part is committed, the records before
its first part are deleted (``DeleteRecords``): a restore reads one snapshot and the entries
after it, not the history of the partition.

Replay (:func:`replay`) applies the newest complete generation's parts, then every entry from
the one its first part came with, in order: a state that changed after its part was written is
in an entry after that part. A generation left unfinished (a worker died, a batch failed) is
ignored; the next owner begins a new one with a higher number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringfence.engine.packed import StateRow, pack_rows, unpack_rows
from ringfence.store.state_log import SnapshotPart, SnapshotSource, StateLog


class Part(msgspec.Struct, frozen=True, array_like=True):
    """One part of snapshot generation ``gen``, begun after entry ``since``."""

    gen: int
    since: int
    index: int
    last: bool
    packed: bytes  # the engine's state rows
    count: int
    own: bytes = b""  # the first part: every row of the task's own


class Entry(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """What one batch wrote to a task's changelog; entries are numbered from 1 (``seq``)."""

    seq: int
    changes: list[bytes] = msgspec.field(default_factory=list)  # packed engine rows, in order
    rows: int = 0  # state rows in ``changes``
    own: bytes = b""  # packed rows of the task's own that changed
    part: Part | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


def decode_entry(raw: bytes) -> Entry:
    """An entry; ``msgspec.DecodeError``/``ValidationError`` name what is malformed."""
    return _decode(raw)


@dataclass
class Replayed:
    """What a changelog partition holds, ready to apply (see :func:`replay`)."""

    engine: list[bytes] = field(default_factory=list)  # packed engine rows, in the order to apply them
    own: dict[tuple[str, str], bytes] = field(default_factory=dict)  # the task's own rows
    head: int = 0  # the newest entry
    gen: int = 0  # the newest generation number used
    since: int = 0  # the complete snapshot began after this entry (0: none)
    logged: int = 0  # engine rows in the entries after ``since``
    trim_before: int | None = None  # the offset of the complete snapshot's first part

    def state_rows(self) -> dict[tuple[str, str], bytes]:
        """The engine's state rows, newest value by (name, key): what a restored engine holds."""
        out: dict[tuple[str, str], bytes] = {}
        for packed in self.engine:
            _apply(out, unpack_rows(packed))
        return out


def replay(entries: Iterable[tuple[int, Entry]]) -> Replayed:
    """The state a changelog partition's committed ``entries`` (offset, entry), in log order,
    describe: the newest complete snapshot and the entries from its start on."""
    entries = list(entries)
    parts: dict[int, dict[int, tuple[int, Part]]] = {}
    complete: list[int] = []
    for offset, entry in entries:
        if entry.part is not None:
            found = parts.setdefault(entry.part.gen, {})
            found[entry.part.index] = (offset, entry.part)
            if entry.part.last and len(found) == entry.part.index + 1:
                complete.append(entry.part.gen)
    out = Replayed(head=max((e.seq for _, e in entries), default=0), gen=max(parts, default=0))
    if complete:
        gen = max(complete)
        ordered = [parts[gen][i] for i in range(len(parts[gen]))]
        out.trim_before, first = ordered[0]
        out.since = first.since
        out.engine = [p.packed for _, p in ordered]
        _apply(out.own, unpack_rows(first.own) if first.own else [])
    for _, entry in entries:
        if entry.seq > out.since:
            out.engine += entry.changes
            out.logged += entry.rows
            if entry.own:
                _apply(out.own, unpack_rows(entry.own))
    return out


def _apply(rows: dict[tuple[str, str], bytes], changes: list[StateRow]) -> None:
    for name, key, value in changes:
        if value is None:
            rows.pop((name, key), None)
        else:
            rows[(name, key)] = value


@dataclass
class TaskLog:
    """A task's side of its changelog: the changes of the batch in hand, the entry they make,
    and the snapshot being written behind (see the module docstring)."""

    schedule: StateLog
    changes: list[bytes] = field(default_factory=list)
    rows: int = 0
    own: list[StateRow] = field(default_factory=list)
    _snapshot: SnapshotPart | None = None  # the part in the entry being committed
    _first_offset: int | None = None  # of the entry with the first part of the generation being written

    @classmethod
    def resumed(cls, replayed: Replayed, min_log_rows: int) -> TaskLog:
        """Going on from ``replayed``, with a snapshot due once ``min_log_rows`` (or half the
        state held) were logged since the last one."""
        log = cls(StateLog(min_log_rows))
        log.schedule.resume(replayed.head, replayed.gen, replayed.logged, replayed.since)
        return log

    def take(self, engine: Any, own: list[StateRow]) -> None:
        """Note what a fold changed: the engine's rows (the state codec runs here) and the task's own."""
        if (packed := engine.take_changes_packed()) is not None:
            self.changes.append(packed[0])
            self.rows += packed[1]
        self.own += own

    def entry(self, engine: SnapshotSource, own_rows: list[StateRow]) -> Entry | None:
        """The entry the batch in hand commits, with a snapshot part when one is due (then
        ``own_rows``, every row of the task's own, goes with a first part); None if nothing."""
        self._snapshot = s = self.schedule.next_part(engine, self.rows)
        part = None
        if s is not None:
            own_all = pack_rows(own_rows) if s.index == 0 else b""
            part = Part(s.gen, s.since, s.index, s.last, s.packed, s.count, own_all)
        if not (self.changes or self.own or part):
            return None
        own = pack_rows(self.own) if self.own else b""
        return Entry(self.schedule.head + 1, self.changes, self.rows, own, part)

    def delivered(self, offset: int) -> None:
        """The entry of the batch in hand was written at ``offset`` (its delivery report)."""
        if self._snapshot is not None and self._snapshot.index == 0:
            self._first_offset = offset

    def abandon(self) -> None:
        """The batch in hand is not committed: forget its changes, and the snapshot under way
        (its parts so far may be committed: the next one takes a new generation number)."""
        self.changes, self.rows, self.own = [], 0, []
        self.schedule.abandon()
        self._snapshot = self._first_offset = None

    def committed(self, entry: Entry | None) -> int | None:
        """After the batch's transaction committed ``entry``; once a snapshot is complete, the
        offset the changelog partition may be trimmed before."""
        snapshot, self._snapshot = self._snapshot, None
        if entry is not None:
            self.schedule.committed(entry.rows, entry.seq, snapshot)
        self.changes, self.rows, self.own = [], 0, []
        return self._first_offset if snapshot is not None and snapshot.last else None


def encode_entry(entry: Entry) -> bytes:
    return _encode(entry)
