"""A store commit run behind the engine: while a writer thread commits one batch, the
processor's thread reads and folds the next.

The compiled core releases the GIL while it folds a batch and packs its changes, and SQLite
while it writes one, so the two overlap. Flat out at 1M customers the store's commit was about
a quarter of the processor's thread (docs/performance.md, item 34); behind, it leaves the path
each event waits on.

One commit at a time, in order: the store's offset only moves forward. The next commit waits
for the one before (:meth:`CommitBehind.settle`), and what that one raised is raised there, on
the processor's thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ringfence.errors import StoreError

log = logging.getLogger("ringfence.processor")


class BehindCommitFailed(StoreError):
    """The commit of an earlier batch, run behind, failed: the engine holds batches the store
    does not. The processor restores its checkpoint and runs them again (the failure is the
    ``__cause__``); a failure that is not the store's then meets the driver's poison isolation,
    because those batches commit on the processor's thread."""


class CommitBehind:
    """The writer thread. ``on_start`` and ``on_stop`` run on it, first and last (its store
    connection is its own: opened, tuned and closed there)."""

    def __init__(self, name: str, on_start: Callable[[], None], on_stop: Callable[[], None]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=on_start)
        self._on_stop = on_stop
        self._pending: Future[None] | None = None
        self._broken = False

    @property
    def pending(self) -> bool:
        """A commit was handed over and not settled yet."""
        return self._pending is not None

    def submit(self, write: Callable[[], None]) -> bool:
        """Run ``write`` on the writer thread; the commit before it must be settled. False, and
        nothing run, if the thread is gone (it could not open its connection, or the interpreter
        is exiting): the caller commits on its own thread."""
        if self._pending is not None:
            raise RuntimeError("a commit is still behind: settle() it first")
        try:
            self._pending = self._pool.submit(write)
        except RuntimeError as error:  # BrokenExecutor, or a submit after shutdown
            if not self._broken:
                self._broken = True
                log.error("the commit writer thread is gone (%s): batches commit on the processor's thread", error)
            return False
        return True

    def settle(self) -> None:
        """Wait for the commit behind, if any: raise :class:`BehindCommitFailed` if it failed."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except BaseException as error:  # a panic of the core is a BaseException too
            raise BehindCommitFailed(f"a batch's commit failed behind the engine ({type(error).__name__})") from error

    def close(self) -> None:
        """Close the writer's connection and stop its thread, once a commit still behind has
        run (:meth:`settle` it first to learn how it ended)."""
        self._pending = None
        try:
            with contextlib.suppress(RuntimeError):  # the thread is gone: no connection to close
                self._pool.submit(self._on_stop).result()
        finally:
            self._pool.shutdown()
