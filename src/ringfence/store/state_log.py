"""How the processor's engine state reaches the store: a changelog, compacted behind.

Writing each changed (feature, key) row into a B-tree every batch cost the processor about
half its time under load: a batch of 2,000 events changes some 10,000 rows at random places.
Instead each batch appends its changes as one blob to ``state_log``, in the same transaction
as its alerts and offset, so a crash keeps both or neither. In memory the changes of recent
batches are merged per row; every so often that merged set is frozen and written into
``feature_state`` a few thousand rows per batch, and once all of it is there, the changelog
up to the freeze is deleted. A row that changed many times in between is written once.

Recovery reads ``feature_state`` and replays the changelog over it in order. Rows of a
frozen set written before a crash are only rewritten by the replay with the same or newer
values, so a partly written set is never a problem.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from ringfence.store.base import StateRow
from ringfence.store.connection import Connection

MIN_ROWS_PER_COMMIT = 1_000  # rows of the frozen set written with each batch: at least this,
ROWS_PER_CHANGE = 0.5  # ...or this many per row the batch changed (keeps up while rows repeat)
IDLE_ROWS = 5_000  # rows written in one step when the processor has nothing else to do (~30 ms)
FREEZE_ROWS = 200_000  # freeze the merged changes once this many rows are pending...
FREEZE_AGE_S = 30.0  # ...or once the oldest is this old

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, str, bytes | None]]).decode


class StateLog:
    """The store's side of engine-state persistence. Used by the processor's thread only."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pending: dict[tuple[str, str], bytes | None] = {}
        self._pending_since: float | None = None
        self._head = 0  # the newest changelog seq merged into _pending
        self._frozen: list[StateRow] = []
        self._frozen_upto = 0  # delete the changelog through this seq once _frozen is written

    def write(self, conn: Connection, changes: list[StateRow], rows: int | None = None) -> tuple[int, int]:
        """Inside the batch's transaction: append ``changes`` and write a slice of the frozen set
        (``rows`` of it, or a slice in proportion to the batch).

        Returns what :meth:`committed` needs: the new changelog seq (0: none) and how many
        frozen rows were written.
        """
        seq = 0
        if changes:
            cur = conn.execute("INSERT INTO state_log (changes) VALUES (?) RETURNING seq", (_encode(changes),))
            seq = int(cur.fetchone()[0])
        if rows is None:
            rows = max(MIN_ROWS_PER_COMMIT, int(len(changes) * ROWS_PER_CHANGE))
        chunk = self._frozen[-rows:] if rows else []
        if chunk:
            conn.executemany("INSERT OR REPLACE INTO feature_state VALUES (?, ?, ?)", [r for r in chunk if r[2]])
            conn.executemany(
                "DELETE FROM feature_state WHERE feature = ? AND key = ?", [(f, k) for f, k, s in chunk if s is None]
            )
            if len(chunk) == len(self._frozen):
                conn.execute("DELETE FROM state_log WHERE seq <= ?", (self._frozen_upto,))
        return seq, len(chunk)

    def committed(self, changes: list[StateRow], seq: int, written: int, now: float) -> None:
        """After the transaction committed: merge the changes, drop what was written, maybe freeze."""
        if written:
            del self._frozen[-written:]
        if seq:
            self._head = seq
            for feature, key, state in changes:
                self._pending[(feature, key)] = state
        if self._pending and self._pending_since is None:
            self._pending_since = now
        due = len(self._pending) >= FREEZE_ROWS or (
            self._pending_since is not None and now - self._pending_since >= FREEZE_AGE_S
        )
        if due and not self._frozen and self._pending:
            self._frozen = [(f, k, s) for (f, k), s in self._pending.items()]
            self._frozen_upto = self._head
            self._pending, self._pending_since = {}, None

    @property
    def behind(self) -> bool:
        """True while a frozen set is still being written."""
        return bool(self._frozen)

    def load(self, conn: Connection) -> Iterator[tuple[str, str, bytes]]:
        """Every persisted state row: ``feature_state`` with the changelog replayed over it.

        Also resets the in-memory sets: what the changelog holds is pending again.
        """
        self._reset()
        for seq, blob in conn.execute("SELECT seq, changes FROM state_log ORDER BY seq"):
            for feature, key, state in _decode(blob):
                self._pending[(feature, key)] = state
            self._head = seq
        for feature, key, state in conn.execute("SELECT feature, key, state FROM feature_state"):
            if (feature, key) not in self._pending:
                yield feature, key, state
        for (feature, key), pending_state in self._pending.items():
            if pending_state is not None:
                yield feature, key, pending_state

    def flush_all(self, conn: Connection) -> None:
        """Write everything pending or frozen into ``feature_state`` and empty the changelog
        (before states of whole definitions are dropped)."""
        merged = {(f, k): s for f, k, s in self._frozen}
        merged.update(self._pending)  # newer than anything frozen
        rows = [(f, k, s) for (f, k), s in merged.items()]
        conn.executemany("INSERT OR REPLACE INTO feature_state VALUES (?, ?, ?)", [r for r in rows if r[2]])
        conn.executemany(
            "DELETE FROM feature_state WHERE feature = ? AND key = ?", [(f, k) for f, k, s in rows if s is None]
        )
        conn.execute("DELETE FROM state_log")

    def flushed(self) -> None:
        """After :meth:`flush_all` committed."""
        self._pending, self._pending_since, self._frozen = {}, None, []
