"""A task's changelog: one record per committed batch, and snapshots written behind.

One changelog topic holds every task's: partition *p* holds the entries of task *p* of every
stage and of the join, each naming its stage, so a batch's transaction writes one changelog
partition per input partition it consumed, not one per stage (the broker's CPU follows the
partitions a transaction writes). Each batch appends one :class:`Entry` to its task's
changelog partition, in the batch's transaction: every state row the batch changed, packed
as the compiled core packs them (:mod:`ringfence.engine.packed`), the task's own rows it
changed (seen event ids, waiting joins, event time), and, when one is being written, a part
of a snapshot. So the records a batch writes do not grow with the keys it touched, as one
record per (state, key) did.

Snapshots follow the embedded runtime's policy (:mod:`ringfence.store.state_log`): a
generation begins once the entries since the last one hold enough rows (the engine's and the
task's own: a join has no engine state, only waiting events), and is written a part at a time
with the batches that follow, each part bounded (rows of the engine's, a slice of the task's
own rows as they were when it began) so no record outgrows what the brokers take. Once its
last part is committed, the records before the first one any task of the partition still
needs are deleted (``DeleteRecords``, :attr:`TaskLog.keep_from`): a restore reads one snapshot
of each task and the entries after it, not the history of the partition.

Replay (:func:`replay`) applies the newest complete generation's parts, then every entry
after the one it began after, in order: a state that changed after its part was written is
in a later entry. A generation left unfinished (a worker died, a commit failed, a pack was
reloaded) is ignored; the next one takes a higher number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ringfence.engine.packed import StateRow, pack_rows, unpack_rows
from ringfence.store.state_log import LOG_PER_STATE, MIN_PART_ROWS, PART_ROWS_PER_CHANGE, SnapshotSource

log = logging.getLogger("ringfence.kafka.process")

MAX_PART_ROWS = 5_000  # engine rows of one part, at most: a record of a few MB at the largest states
PART_BYTES = 512 * 1024  # the task's own rows in one part, about


class Part(msgspec.Struct, frozen=True, array_like=True):
    """One part of snapshot generation ``gen``, begun after entry ``since``."""

    gen: int
    since: int
    index: int
    last: bool
    packed: bytes  # the engine's state rows
    count: int
    own: bytes = b""  # a slice of the task's own rows, as they were when the generation began


class Entry(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """What one batch wrote to a task's changelog; a task's entries are numbered from 1 (``seq``)."""

    seq: int
    changes: list[bytes] = msgspec.field(default_factory=list)  # packed engine rows, in order
    rows: int = 0  # state rows in ``changes``
    own: bytes = b""  # packed rows of the task's own that changed
    own_rows: int = 0  # how many
    part: Part | None = None
    stage: str = ""  # the task's stage, or the join (the partition holds every stage's)


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
    logged: int = 0  # rows (the engine's and the task's own) in the entries after ``since``
    trim_before: int | None = None  # the offset of the complete snapshot's first part
    first: int | None = None  # the offset of the first entry read

    @property
    def keep_from(self) -> int | None:
        """The offset of the first entry a restore of the task needs (None: it has none)."""
        return self.trim_before if self.trim_before is not None else self.first

    def state_rows(self) -> dict[tuple[str, str], bytes]:
        """The engine's state rows, newest value by (name, key): what a restored engine holds."""
        out: dict[tuple[str, str], bytes] = {}
        for packed in self.engine:
            _apply(out, unpack_rows(packed))
        return out


def replay(entries: Iterable[tuple[int, Entry]]) -> Replayed:
    """The state a changelog partition's committed ``entries`` (offset, entry), in log order,
    describe: the newest complete snapshot and the entries after its start. An entry read
    twice (the reader restarted from the start of a trimmed log) counts once; a gap in the
    entries after the snapshot's start raises ``RuntimeError`` (a restore must not go on
    from a state it does not have)."""
    parts: dict[int, dict[int, tuple[int, Part]]] = {}
    numbered: dict[int, Entry] = {}
    first: int | None = None
    for offset, entry in entries:
        first = offset if first is None else min(first, offset)
        numbered.setdefault(entry.seq, entry)
        if entry.part is not None:
            parts.setdefault(entry.part.gen, {}).setdefault(entry.part.index, (offset, entry.part))
    complete = [
        gen for gen, found in parts.items() if any(p.last and len(found) == p.index + 1 for _, p in found.values())
    ]
    out = Replayed(head=max(numbered, default=0), gen=max(parts, default=0), first=first)
    if complete:
        gen = max(complete)
        ordered = [parts[gen][i] for i in range(len(parts[gen]))]
        out.trim_before, out.since = ordered[0][0], ordered[0][1].since
        out.engine = [p.packed for _, p in ordered if p.count]
        for _, p in ordered:
            if p.own:
                _apply(out.own, unpack_rows(p.own))
    after = sorted(seq for seq in numbered if seq > out.since)
    if after and after != list(range(out.since + 1, after[-1] + 1)):
        raise RuntimeError(f"the changelog lacks entries after {out.since}: it holds {after[:3]}...{after[-3:]}")
    for seq in after:
        entry = numbered[seq]
        out.engine += entry.changes
        out.logged += entry.rows + entry.own_rows
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
class _Writing:
    """A generation being written."""

    gen: int
    since: int  # the last entry before it began
    own: list[bytes]  # slices of the task's own rows still to write
    parts: int = 0  # committed so far
    walked: bool = False  # the engine's rows are all written
    logged: int = 0  # rows logged since it began


@dataclass
class TaskLog:
    """A task's side of its changelog: the changes of the batch in hand, the entry they make,
    and the snapshot being written behind (see the module docstring)."""

    min_log_rows: int
    head: int = 0  # the newest entry committed
    gen: int = 0  # the newest generation number used
    logged: int = 0  # rows in the entries since the complete snapshot's start
    changes: list[bytes] = field(default_factory=list)
    rows: int = 0
    own: list[StateRow] = field(default_factory=list)
    _writing: _Writing | None = None
    _part: Part | None = None  # in the entry being committed
    _first_offset: int | None = None  # of the entry with the generation's first part
    # the offset of the first entry a restore needs: the complete snapshot's first part, or the
    # first entry if none is complete (None: no entry yet); the partition is trimmed to the
    # least of its tasks'
    keep_from: int | None = None

    @classmethod
    def resumed(cls, replayed: Replayed, min_log_rows: int) -> TaskLog:
        """Going on from ``replayed``, with a snapshot due once ``min_log_rows`` (or half the
        rows held) were logged since the last one."""
        return cls(min_log_rows, replayed.head, replayed.gen, replayed.logged, keep_from=replayed.keep_from)

    def take(self, engine: Any, own: list[StateRow]) -> None:
        """Note what a fold changed: the engine's rows (the state codec runs here) and the task's own."""
        if (packed := engine.take_changes_packed()) is not None:
            self.changes.append(packed[0])
            self.rows += packed[1]
        self.own += own

    def entry(
        self, engine: SnapshotSource, own_rows: Callable[[], list[StateRow]], own_held: int, *, tainted: bool
    ) -> Entry | None:
        """The entry the batch in hand commits, with a snapshot part when one is due
        (``own_rows``: every row of the task's own, taken when a generation begins; there are
        ``own_held``); None if nothing. A ``tainted`` task (a fold of it failed: its engine
        holds what the failure left) writes no part, and gives up the generation under way."""
        self._part = None
        if tainted:
            self._give_up()
        else:
            held = engine.state_size() + own_held
            if self._writing is None and self.logged >= max(self.min_log_rows, LOG_PER_STATE * held):
                engine.snapshot_begin()
                self._writing = _Writing(self.gen + 1, self.head, _slices(own_rows()))
            if self._writing is not None:
                try:
                    self._part = self._next_part(engine, self._writing)
                except Exception:  # a state the codec cannot take: no snapshot until it is gone
                    log.exception("a snapshot part of a changelog failed; giving the snapshot up")
                    self._give_up()
        if not (self.changes or self.own or self._part):
            return None
        own = pack_rows(self.own) if self.own else b""
        return Entry(self.head + 1, self.changes, self.rows, own, len(self.own), self._part)

    def _next_part(self, engine: SnapshotSource, w: _Writing) -> Part:
        packed, count = b"", 0
        if not w.walked:
            rows = min(MAX_PART_ROWS, max(MIN_PART_ROWS, PART_ROWS_PER_CHANGE * self.rows))
            packed, count, w.walked = engine.snapshot_next(rows)
        own = w.own.pop(0) if w.own else b""
        return Part(w.gen, w.since, w.parts, w.walked and not w.own, packed, count, own)

    def delivered(self, offset: int) -> None:
        """The entry of the batch in hand was written at ``offset`` (its delivery report)."""
        if self.keep_from is None:  # the task's first: needed until a snapshot (if aborted, one after it is)
            self.keep_from = offset
        if self._part is not None and self._part.index == 0:
            self._first_offset = offset

    def abandon(self) -> None:
        """The batch in hand is not committed: forget its changes, and the snapshot under way
        (its parts so far may be committed: the next one takes a new generation number)."""
        self.changes, self.rows, self.own = [], 0, []
        self._give_up()
        self._part = None

    def _give_up(self) -> None:
        """Drop the generation under way; its parts so far may be committed: the next takes a new number."""
        if self._writing is not None:
            self.gen = max(self.gen, self._writing.gen)
        self._writing = self._first_offset = None

    def committed(self, entry: Entry | None) -> int | None:
        """After the batch's transaction committed ``entry``; once a snapshot is complete, the
        offset the task needs its changelog from (:attr:`keep_from`), now later."""
        part, self._part = self._part, None
        self.changes, self.rows, self.own = [], 0, []
        if entry is None:
            return None
        logged = entry.rows + entry.own_rows
        self.head, self.logged = entry.seq, self.logged + logged
        w = self._writing
        if w is None or part is None:
            return None
        w.parts, w.logged, self.gen = w.parts + 1, w.logged + logged, w.gen
        if not part.last:
            return None
        self.logged, self._writing = w.logged, None
        if self._first_offset is not None:
            self.keep_from = self._first_offset
        return self._first_offset


def _slices(rows: list[StateRow]) -> list[bytes]:
    """``rows`` packed in slices of about ``PART_BYTES``."""
    out: list[bytes] = []
    start, size = 0, 0
    for i, (name, key, value) in enumerate(rows):
        size += len(name) + len(key) + len(value or b"") + 8
        if size >= PART_BYTES:
            out.append(pack_rows(rows[start : i + 1]))
            start, size = i + 1, 0
    if start < len(rows):
        out.append(pack_rows(rows[start:]))
    return out


def encode_entry(entry: Entry) -> bytes:
    return _encode(entry)
