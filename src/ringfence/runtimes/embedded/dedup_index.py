"""The journal's duplicate index: which (source, event_id) a segment holds, in a RocksDB
database of its own beside the segment's file (``journal-<first offset>.dedup``).

Why not SQLite's unique index, as before: random event ids (UUIDs, as the event contract advises)
land on a random page of a B-tree each, so once the index outgrows the page cache every commit
writes about a page an event (35.7 µs of CPU an event appending, against 9.2 with counting ids;
docs/performance.md, item 29). An LSM tree writes its keys in sorted runs instead.

The journal is the source of truth, and the index is derived from it: each write of the index
(the keys of one committed append, with no fsync of its own) also records the last offset it
covers, in the same atomic batch. Opening an index first indexes the segment's records past that
offset (those of an append killed between the journal's commit and the index's write, or written
before a power cut took RocksDB's unsynced log), so once open it holds exactly the segment's
records, and an event is reported a duplicate only when the journal holds it. An index that
cannot be opened (damaged), or is ahead of its segment, is moved aside and made again from the
segment.

RocksDB lets one process open a database at a time: indexes are shared by every journal in a
process (:func:`open_index`), and while another process has one open an append raises
:class:`IndexHeld`, which the journal retries for :data:`OPEN_WAIT_S` (an ingest worker left over
from a killed server finishes the append under way and exits, letting go).

Memory: each open index has up to two memtables of :data:`WRITE_BUFFER_BYTES`, RocksDB's block
cache for data blocks, and its files' filters and index blocks, held outside that cache (about
1.6 bytes a key): reading them through the cache cost 5-8 µs of CPU an event flat out (0.85x
the events/s; docs/performance.md, item 31).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ringfence.errors import StoreError
from ringfence.private_files import private_file, private_subdir

if TYPE_CHECKING:
    import rocksdict

COVERED = b"~covered"  # no event's key starts with "~" (they start with a digit: key())
SUFFIX = ".dedup"
STALE = ".stale"  # an index moved aside, being deleted (journal-<first>.dedup.stale-<ns>)
OPEN_WAIT_S = 10.0  # how long an append retries while another process has an index open
WRITE_BUFFER_BYTES = 32 << 20  # a memtable (RocksDB's default: 64 MiB)
MEMTABLE_FILTER_RATIO = 0.05  # of a memtable, for its filter: 1.6 MiB, ~25 bits a key
CATCH_UP_CHUNK = 10_000
PRIVATE_UMASK = 0o077
# RocksDB's words for a LOCK file another process (or this one, elsewhere) holds, and for a
# database damaged or missing a file (a full disk, say, is neither: it is raised as it is)
_HELD = ("While lock file", "lock hold by current process")
_DAMAGED = ("Corruption", "No such file or directory")
_EMPTY = b""


def key(source: str, event_id: str) -> bytes:
    """The index's key for an event: the source's length first, so no two pairs share one."""
    return f"{len(source)}:{source}{event_id}".encode()


class IndexHeld(StoreError):
    """Another process has the index open (RocksDB's lock): it appends, or has not exited yet."""


class IndexDamaged(StoreError):
    """RocksDB finds the index damaged, or a file of it missing: made again from its segment."""


def damaged(error: BaseException) -> bool:
    """Whether RocksDB's ``error`` says the index is damaged (rather than, say, the disk full)."""
    return any(words in str(error) for words in _DAMAGED)


class SegmentIndex:
    """One segment's duplicate index. Thread-safe (RocksDB's handle is)."""

    def __init__(self, path: Path, db: rocksdict.Rdict) -> None:
        self.path = path
        self._db: rocksdict.Rdict | None = db
        self._users = 0

    @property
    def closed(self) -> bool:
        """Closed by :func:`release`, :func:`discard` or :func:`close_path`: a journal holding it
        opens it again."""
        return self._db is None

    def _handle(self) -> rocksdict.Rdict:
        if self._db is None:
            raise StoreError(f"the journal's duplicate index {self.path.name} is closed")
        return self._db

    def covered(self) -> int:
        """The last offset indexed (0: none)."""
        value = self._handle().get(COVERED)
        return int.from_bytes(value, "big") if isinstance(value, bytes) else 0

    def holding(self, keys: list[bytes]) -> set[bytes]:
        """Which of ``keys`` the segment holds."""
        if not keys:
            return set()
        found = cast("list[bytes | None]", self._handle().get(cast("list[str | int | float | bytes | bool]", keys)))
        return {k for k, v in zip(keys, found, strict=True) if v is not None}

    def add(self, keys: Iterable[bytes], covered: int) -> None:
        """Index ``keys``, records up to offset ``covered`` now all indexed (one atomic write)."""
        import rocksdict

        batch = rocksdict.WriteBatch(raw_mode=True)
        # in order: each key's insert into the memtable's skip list starts where the one
        # before it ended (a few levels down) rather than at the top (docs/performance.md, item 35)
        for k in sorted(keys):
            batch.put(k, _EMPTY)
        batch.put(COVERED, covered.to_bytes(8, "big"))
        self._handle().write(batch, _no_sync())

    def catch_up(self, records: Iterator[tuple[int, str, str]], last: int) -> int:
        """Index ``records`` (offset, source, event_id, in offset order: the segment's past
        :meth:`covered`), the segment's last offset being ``last``; how many were indexed."""
        indexed, chunk = 0, []
        for offset, source, event_id in records:
            chunk.append(key(source, event_id))
            if len(chunk) == CATCH_UP_CHUNK:
                self.add(chunk, offset)
                indexed, chunk = indexed + len(chunk), []
        self.add(chunk, last)
        return indexed + len(chunk)

    def _close(self) -> None:
        # dropped, not close()d: rocksdict's close() flushes the memtables (tens of MiB and an
        # fsync, on ingest's path at a segment's roll); its log already holds them
        self._db = None


_opened: weakref.WeakValueDictionary[Path, SegmentIndex] = weakref.WeakValueDictionary()
_opening = threading.Lock()


def index_path(segment_file: Path) -> Path:
    """The index directory of the segment whose file is ``segment_file``."""
    return segment_file.with_suffix(SUFFIX)


def open_index(path: Path) -> SegmentIndex:
    """The index at ``path`` (created if missing), shared in this process: call :func:`release`
    once done. Raises :class:`IndexHeld` if another process has it open, :class:`IndexDamaged`
    if RocksDB finds it damaged. One no journal refers to any more (dropped without
    :func:`release`) closes as it is collected."""
    private_subdir(path)  # before resolving it: a link in its place is refused, not followed
    path = path.resolve()
    with _opening:
        index = _opened.get(path)
        if index is None or index.closed:
            index = _opened[path] = SegmentIndex(path, _open_db(path))
        index._users += 1
        return index


def release(index: SegmentIndex) -> None:
    """Done with ``index``: closed once no journal of this process uses it."""
    with _opening:
        index._users -= 1
        if index._users <= 0 and _opened.get(index.path) is index:
            del _opened[index.path]
            index._close()


def discard(index: SegmentIndex) -> None:
    """Close ``index`` now, for every journal of this process (a write to it failed): the next
    :func:`open_index` opens it again, and the journal catches it up."""
    with _opening:
        if _opened.get(index.path) is index:
            del _opened[index.path]
    index._close()


def close_path(path: Path) -> None:
    """Close the index at ``path`` if this process has it open (its segment is dropped)."""
    with _opening:
        index = _opened.pop(path.resolve(), None)
    if index is not None:
        index._close()


def rebuild(path: Path) -> SegmentIndex:
    """The index at ``path`` closed in this process, moved aside and opened again, empty (it was
    damaged, or ahead of its segment): call :func:`release` once done."""
    close_path(path)
    with contextlib.suppress(FileNotFoundError):
        move_aside(path.resolve())
    return open_index(path)


def move_aside(path: Path) -> Path:
    """Rename the index at ``path`` out of the way (one rename: a crash leaves it whole or gone
    from its name) to a name a journal's sweep deletes; the new name."""
    aside = path.with_name(f"{path.name}{STALE}-{time.time_ns()}")
    path.rename(aside)
    return aside


def _open_db(path: Path) -> rocksdict.Rdict:
    import rocksdict

    # RocksDB makes its files itself, in the umask's mode: the process that appends makes its
    # umask private, as the data dir's files are (ringfence.private_files); those made under
    # another umask before are put right
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)
    private_subdir(path)
    for found in path.iterdir():
        private_file(found)
    try:
        return rocksdict.Rdict(str(path), _options())
    except Exception as error:  # rocksdict raises Exception for RocksDB's errors
        if any(words in str(error) for words in _HELD):
            raise IndexHeld(f"the journal's duplicate index {path.name} is held by another process") from error
        if damaged(error):
            raise IndexDamaged(f"the journal's duplicate index {path.name} is damaged: {error}") from error
        raise StoreError(f"the journal's duplicate index {path.name} cannot be opened: {error}") from error


def _options() -> rocksdict.Options:
    import rocksdict

    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(10, False)  # most lookups miss (new events): a filter answers them
    options.set_block_based_table_factory(table)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    # ...and one in each memtable: a lookup the filter answers skips the skip list, whose search
    # (a cache miss a level, about 19 levels in 32 MiB of random keys) was 12 % of the ingest
    # worker flat out (docs/performance.md, item 35)
    options.set_memtable_prefix_bloom_ratio(MEMTABLE_FILTER_RATIO)
    options.set_memtable_whole_key_filtering(True)
    options.set_max_background_jobs(2)
    options.set_keep_log_file_num(2)
    options.set_max_log_file_size(1 << 20)
    return options


@functools.cache
def _no_sync() -> rocksdict.WriteOptions:
    import rocksdict

    options = rocksdict.WriteOptions()
    options.sync = False  # the journal is fsync'd; a lost tail of the index is indexed again on open
    return options
