"""How the processor's engine state reaches the store: a changelog, and snapshots written behind.

Each batch appends the state rows it changed as one packed entry to ``state_log``
(:mod:`ringfence.engine.packed`), in the same transaction as its alerts and offset, so a crash
keeps both or neither.

Behind it, a snapshot of the whole state is written a part at a time, each part in the
transaction of a batch (``snapshot_parts``). A generation begins at changelog seq ``since``:
every change up to it is in memory, so in the parts. The engine runs on meanwhile; a state that
changes after its part was written is in the changelog after ``since``. Once the last part is
in, the generation is complete: the older one, and the changelog up to ``since``, are retired.
Their rows are deleted a few at a time, with each later transaction (deleting a generation's
blobs at once stalled the processor for about a second at 100,000 customers); recovery never
reads them.

Recovery applies the newest complete generation's parts, then the changelog after its
``since``, in order; each row replaces its (name, key), a row without state drops it. That is
what the engine held at the last commit. A store written before snapshots existed has its rows
in ``feature_state``: they are the base instead, and the first snapshot retires them.

This replaced writing the merged changes into ``feature_state`` at random keys, which at a
million customers never caught up and held every pending row in Python (docs/performance.md).
Parts are written in sequence, by the core, with no per-row work in Python.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from ringfence.engine.packed import pack_rows
from ringfence.store.connection import Connection

log = logging.getLogger("ringfence.store")

LOAD_ROWS = 10_000  # legacy feature_state rows read, packed and applied at a time on recovery
# A snapshot begins once the changelog past the last one holds this many rows (about 1.5 s
# of restore: a small state is not rewritten every few seconds, which took the disk from the
# journal's commits)...
MIN_LOG_ROWS = 2_000_000
LOG_PER_STATE = 0.5  # ...and this many per state held: at scale, recovery reads about twice the state
# ...or once it holds this many bytes, and as many as the last snapshot: a batch logs the whole
# of each state it changed, so a few large ones (a device's distinct customers of long ids)
# changed by every batch grew the store by 100 MB/s, filling the disk before the rows counted
# reached a snapshot (a re-test)
MIN_LOG_BYTES = 64 << 20
LOG_BYTES_PER_SNAPSHOT_BYTE = 1.0
PART_ROWS_PER_CHANGE = 2  # snapshot rows written with a batch per row it changed: done in half the log
# (by bytes too, at the last snapshot's bytes a row: a batch changing a few large states wrote
# 10 MB of changelog and 2,000 small rows of the snapshot, which took 5 s and 500 MB of log)
MIN_PART_ROWS = 2_000  # ...and at least this many
IDLE_PART_ROWS = 5_000  # rows of a part written when the processor has nothing else to do (a few ms)
SWEEP_PARTS = 2  # retired snapshot parts deleted per transaction: faster than parts are written...
SWEEP_LOG_ENTRIES = 2  # ...and retired changelog entries (one is written per batch)
# ...and more of each while they hold fewer bytes than this many times what the transaction
# writes: two of each a transaction, whatever their size, left 2.5 GB of retired generations and
# 3.2 GB of changelog behind 10 MB batches (a re-test)
SWEEP_BYTES_PER_WRITTEN = 2
SWEEP_MOST = 64  # rows of each looked at a transaction


class SnapshotSource(Protocol):
    """An engine, as the snapshot writer sees it (:class:`ringfence.engine.engine.Engine`)."""

    def state_size(self) -> int: ...

    def snapshot_begin(self) -> None: ...

    def snapshot_next(self, max_rows: int) -> tuple[bytes, int, bool]: ...

    def restore_packed(self, packed: bytes) -> int: ...


@dataclass(frozen=True)
class SnapshotPart:
    """One part of snapshot generation ``gen``, begun at changelog seq ``since``."""

    gen: int
    since: int
    index: int
    packed: bytes
    count: int
    last: bool


@dataclass
class _Writing:
    gen: int
    since: int
    parts: int = 0
    rows: int = 0  # state rows in the parts so far
    bytes: int = 0  # of the parts so far
    logged: int = 0  # changelog rows committed since it began
    logged_bytes: int = 0  # ...and their bytes
    began: float = field(default_factory=time.monotonic)


class StateLog:
    """The store's side of engine-state persistence. Used by one thread at a time: the
    processor's, or its writer's for a commit behind the engine (the processor waits for that
    commit before any other use: ``runtimes/embedded/commit_behind.py``)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._head = 0  # the newest changelog seq committed
        self._gen = 0  # the newest generation number used
        self._logged = 0  # changelog rows after the complete snapshot's start
        self._logged_bytes = 0  # ...and their bytes
        self._snapshot_bytes = 0  # of the complete snapshot
        self._snapshot_rows = 0  # ...and its rows
        self._writing_bytes = 0  # of the changelog entries of the transaction open
        self._legacy = False  # feature_state still holds rows of a store from before snapshots
        self._writing: _Writing | None = None
        self._retired = 0  # the changelog through this seq is retired (a complete snapshot holds it)
        self._sweeping = True  # retired rows may be left to delete
        self._swept: bool | None = None  # what the sweep of the open transaction found: none left

    # -- writing, with each batch ----------------------------------------------------------------

    def next_part(
        self, engine: SnapshotSource, changed_rows: int, changed_bytes: int = 0, *, idle: bool = False
    ) -> SnapshotPart | None:
        """The snapshot part to commit with a batch that changed ``changed_rows`` rows of
        ``changed_bytes`` packed (with ``idle``: a step on its own), beginning a generation when
        one is due; None if none."""
        w = self._writing
        if w is None:
            if not (self._legacy or self._due(engine)):
                return None
            engine.snapshot_begin()
            w = self._writing = _Writing(self._gen + 1, self._head)
        by_bytes = PART_ROWS_PER_CHANGE * changed_bytes * self._snapshot_rows // max(1, self._snapshot_bytes)
        rows = IDLE_PART_ROWS if idle else max(MIN_PART_ROWS, PART_ROWS_PER_CHANGE * changed_rows, by_bytes)
        packed, count, last = engine.snapshot_next(rows)
        return SnapshotPart(w.gen, w.since, w.parts, packed, count, last)

    def _due(self, engine: SnapshotSource) -> bool:
        """Whether the changelog past the complete snapshot is long enough to begin another."""
        return self._logged >= max(MIN_LOG_ROWS, LOG_PER_STATE * engine.state_size()) or (
            self._logged_bytes >= max(MIN_LOG_BYTES, LOG_BYTES_PER_SNAPSHOT_BYTE * self._snapshot_bytes)
        )

    def abandon(self) -> None:
        """Give up the generation being written (its parts go when the next one begins). The
        next one takes a new number: a commit that raised may still have stored this one."""
        if self._writing is not None:
            self._gen = max(self._gen, self._writing.gen)
        self._writing = None

    def write(self, conn: Connection, changes: list[bytes], part: SnapshotPart | None) -> int:
        """Inside the batch's transaction: append ``changes`` (packed entries) and ``part``.
        Returns the newest changelog seq written (0: none), for :meth:`committed`."""
        seq = 0
        self._writing_bytes = sum(map(len, changes))
        for packed in changes:
            seq = int(conn.execute("INSERT INTO state_log (changes) VALUES (?) RETURNING seq", (packed,)).fetchone()[0])
        retires = part is not None and (part.index == 0 or part.last)
        if part is not None:
            if part.index == 0:  # a generation left unfinished (a crash, a failed commit) is retired
                conn.execute("DELETE FROM snapshots WHERE complete = 0")
                conn.execute("INSERT INTO snapshots (gen, since, complete) VALUES (?, ?, 0)", (part.gen, part.since))
            conn.execute(
                "INSERT INTO snapshot_parts (gen, part, packed) VALUES (?, ?, ?)", (part.gen, part.index, part.packed)
            )
            if part.last:
                conn.execute("UPDATE snapshots SET complete = 1 WHERE gen = ?", (part.gen,))
                conn.execute("DELETE FROM snapshots WHERE gen < ?", (part.gen,))
                if self._legacy:
                    conn.execute("DELETE FROM feature_state")
        self._swept = None
        if self._sweeping or retires:
            written = self._writing_bytes + (len(part.packed) if part is not None else 0)
            retired = part.since if part is not None and part.last else self._retired
            self._swept = self._sweep(conn, retired, SWEEP_BYTES_PER_WRITTEN * written)
        return seq

    @staticmethod
    def _sweep(conn: Connection, retired: int, budget: int) -> bool:
        """Delete a bounded slice of the retired rows: parts of generations no longer listed, and
        the changelog through ``retired``; of each, the oldest few, and more while they hold
        fewer than ``budget`` bytes. True if none is left."""
        parts = _oldest(
            conn,
            "SELECT gen, part, length(packed) FROM snapshot_parts WHERE gen NOT IN (SELECT gen FROM snapshots) "
            "ORDER BY gen, part LIMIT ?",
            (SWEEP_MOST,),
            SWEEP_PARTS,
            budget,
        )
        for gen, part in parts:
            conn.execute("DELETE FROM snapshot_parts WHERE gen = ? AND part = ?", (gen, part))
        entries = _oldest(
            conn,
            "SELECT seq, 0, length(changes) FROM state_log WHERE seq <= ? ORDER BY seq LIMIT ?",
            (retired, SWEEP_MOST),
            SWEEP_LOG_ENTRIES,
            budget,
        )
        if entries:
            conn.execute("DELETE FROM state_log WHERE seq <= ?", (entries[-1][0],))
        return len(parts) < SWEEP_PARTS and len(entries) < SWEEP_LOG_ENTRIES

    @property
    def sweeping(self) -> bool:
        """Retired rows may be left to delete (an idle step deletes some)."""
        return self._sweeping

    def committed(self, changed_rows: int, seq: int, part: SnapshotPart | None) -> None:
        """After the transaction committed."""
        if seq:
            self._head = seq
        if self._swept is not None:
            self._sweeping, self._swept = not self._swept, None
        self._logged += changed_rows
        self._logged_bytes += self._writing_bytes
        w = self._writing
        if w is not None:
            w.logged += changed_rows
            w.logged_bytes += self._writing_bytes
        self._writing_bytes = 0
        if part is None or w is None:
            return
        w.parts, w.rows, w.bytes = w.parts + 1, w.rows + part.count, w.bytes + len(part.packed)
        self._gen = w.gen
        if part.last:
            self._logged, self._legacy, self._writing = w.logged, False, None
            self._logged_bytes, self._snapshot_bytes, self._snapshot_rows = w.logged_bytes, w.bytes, w.rows
            self._retired = part.since
            log.info(
                "state snapshot %d written: %d rows in %d parts over %.1fs; the changelog through seq %d retired",
                w.gen,
                w.rows,
                w.parts,
                time.monotonic() - w.began,
                w.since,
            )

    def write_all(self, conn: Connection, engine: SnapshotSource) -> SnapshotPart:
        """Inside a transaction: a whole snapshot of ``engine`` (after a pack reload, which
        drops the state of changed definitions: the changelog before it goes with the old
        snapshot). Returns its last part, for :meth:`committed`."""
        self._writing = None
        engine.snapshot_begin()
        w = self._writing = _Writing(self._gen + 1, self._head)
        while True:
            packed, count, last = engine.snapshot_next(IDLE_PART_ROWS * 5)
            part = SnapshotPart(w.gen, w.since, w.parts, packed, count, last)
            self.write(conn, [], part)
            if last:
                return part
            w.parts, w.rows, w.bytes = w.parts + 1, w.rows + count, w.bytes + len(packed)

    # -- recovery --------------------------------------------------------------------------------

    def load(self, conn: Connection, engine: SnapshotSource) -> int:
        """Restore ``engine`` from the newest complete snapshot and the changelog after it (or,
        in a store from before snapshots, ``feature_state`` and all the changelog); return how
        many rows were applied. What was being written is given up."""
        self._reset()
        self._gen = int(conn.execute("SELECT COALESCE(MAX(gen), 0) FROM snapshots").fetchone()[0])
        found = conn.execute("SELECT gen, since FROM snapshots WHERE complete = 1 ORDER BY gen DESC").fetchone()
        applied = 0
        if found is not None:
            gen, since = int(found[0]), int(found[1])
            self._retired = since
            for (packed,) in conn.execute("SELECT packed FROM snapshot_parts WHERE gen = ? ORDER BY part", (gen,)):
                applied += engine.restore_packed(bytes(packed))
                self._snapshot_bytes += len(packed)
            self._snapshot_rows = applied
        else:
            since = 0
            rows = conn.execute("SELECT feature, key, state FROM feature_state")
            while chunk := rows.fetchmany(LOAD_ROWS):
                self._legacy = True
                applied += engine.restore_packed(pack_rows([(f, k, bytes(s)) for f, k, s in chunk]))
        self._head = since
        for seq, packed in conn.execute("SELECT seq, changes FROM state_log WHERE seq > ? ORDER BY seq", (since,)):
            self._logged += engine.restore_packed(bytes(packed))
            self._logged_bytes += len(packed)
            self._head = int(seq)
        return applied + self._logged


def _oldest(conn: Connection, sql: str, args: tuple[int, ...], count: int, budget: int) -> list[tuple[int, int]]:
    """The keys of the rows ``sql`` lists (key, key, bytes; oldest first) to delete now: the
    first ``count``, and more while those taken hold fewer than ``budget`` bytes."""
    taken: list[tuple[int, int]] = []
    held = 0
    for first, second, size in conn.execute(sql, args).fetchall():
        if len(taken) >= count and held >= budget:
            break
        taken.append((int(first), int(second)))
        held += int(size or 0)
    return taken
