"""Rule back-tests in a child process, off the processor's core.

A back-test replays up to a million stored events through two fresh engines: seconds to
minutes of CPU-bound Python. In the API process it would hold the GIL against the processor
thread and the event loop, so it runs in a child (``python -m`` a runtime's module that reads
its own log: ``ringfence.runtimes.embedded.backtest`` reads the journal read-only) at a lower
CPU priority, with its time budget, CPU time and memory bounded. It gets its job on stdin and
answers NDJSON on stdout: progress lines, then one ``result`` (or ``error``) line. When the
budget is spent it stops and answers with the hits so far, ``truncated: true`` and ``reason:
"time_budget"``; the parent kills a child that overruns its budget by :data:`GRACE_S` on a
timer of its own, whether or not anyone still reads the child's lines (:class:`BacktestChild`). The child runs isolated
(``python -I``, cwd ``/``): nothing in the server's working directory can shadow the package.
Used by the embedded and kafka platforms for ``POST /v1/rules/backtest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
import traceback
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from ringfence.engine.backtest import Backtest
from ringfence.engine.pack import load_pack
from ringfence.events.model import decode_event

GRACE_S = 5.0
MEMORY_BYTES = 2 << 30  # address space of the child: a back-test's engines hold per-key state
NICENESS = 10  # the processor and the API win the CPU when they need it
MAX_LINE = 64 << 20  # the result line names every detection of both packs
# what the interpreter needs, and nothing else: receivers' secrets live in variables of any name
# (and where TLS clients find the CA certificates, for the kafka runtime's child)
_CHILD_ENV = frozenset({"PATH", "VIRTUAL_ENV", "LANG", "TMPDIR", "HOME", "SYSTEMROOT", "SSL_CERT_FILE", "SSL_CERT_DIR"})
_CHILD_CWD = os.path.abspath(os.sep)  # the child needs no working directory: "/"


class KafkaSource(msgspec.Struct, forbid_unknown_fields=True):
    """The events a back-test reads from a Kafka topic: per partition, offsets [start, end).
    The client's settings (credentials included) travel on the child's stdin, never its
    arguments or environment."""

    config: dict[str, str]
    topic: str
    ranges: list[tuple[int, int, int]]  # (partition, start, end)
    offset_bits: int  # an event is cited as partition << offset_bits | offset
    skip: int = 0  # the oldest records of the ranges left out (so about ``limit`` are run)
    retries_within_s: float = 0.0  # a producer's retry arriving this soon after the first copy is
    # dropped by the workers (``kafka_dedup_window_s``): the back-test drops it too


class BacktestJob(msgspec.Struct, forbid_unknown_fields=True):
    """What the API process sends the child: where the events are (the embedded journal, or
    ``kafka``) and both packs' texts."""

    journal: str
    after: int
    limit: int
    live: str
    candidate: str
    lists: dict[str, list[str]]
    budget_s: float
    progress_every_s: float = 0.5
    kafka: KafkaSource | None = None


Rows = Iterator[tuple[int, int, float, bytes]]  # (offset, partition, ingested_at, stored body)
Reader = Callable[[BacktestJob], tuple[int, Rows]]  # a job's events: about how many, and the rows


def run_job(
    job: BacktestJob, emit: Callable[[dict[str, Any]], None], clock: Callable[[], float], read: Reader
) -> dict[str, Any]:
    """Run ``job`` over the events ``read`` gives, calling ``emit`` with progress lines; return
    the result.

    ``clock`` is monotonic seconds; the budget counts from the call.
    """
    started = clock()
    deadline = started + job.budget_s
    live, candidate = load_pack(job.live, stored=True), load_pack(job.candidate)  # the live one is running
    run = Backtest(live, candidate, {name: frozenset(values) for name, values in job.lists.items()})
    total, records = read(job)
    emit({"progress": {"events": 0, "of": total, "elapsed_s": round(clock() - started, 3)}})
    next_progress = clock() + job.progress_every_s
    truncated = False
    # a producer's retry the log holds as a record of its own (the kafka events topic can: the
    # workers drop one that arrives within their window of the first copy) is replayed as the
    # workers took it; the first copies' arrival by a digest of their identity: some 100 MB for
    # the million events a back-test reads at most (the embedded journal refuses such retries)
    window = job.kafka.retries_within_s if job.kafka is not None else 0.0
    first_seen: dict[int, float] = {}
    duplicates = 0
    for offset, partition, ingested_at, body in records:
        now = clock()
        if now >= deadline:
            truncated = True
            break
        if now >= next_progress:
            emit({"progress": {"events": run.events, "of": total, "elapsed_s": round(now - started, 3)}})
            next_progress = now + job.progress_every_s
        try:
            event = decode_event(body)
        except (msgspec.DecodeError, msgspec.ValidationError):  # written by another version, say
            run.events, run.failed = run.events + 1, run.failed + 1
            continue
        if window > 0:
            identity = hash((event.source, event.event_id))
            first = first_seen.get(identity)
            if first is not None and ingested_at - first <= window:
                run.events, duplicates = run.events + 1, duplicates + 1
                continue
            first_seen[identity] = ingested_at  # past the window the workers take it as new
        run.feed(offset, partition, ingested_at, event)
    truncated = truncated or clock() >= deadline  # a reader that stopped at the budget
    if not truncated:
        run.finish()  # pending timers fire only when every asked-for event was seen
    return {
        "events": run.events,
        "of": total,
        "failed_events": run.failed,
        "duplicate_events": duplicates,
        "truncated": truncated,
        "reason": "time_budget" if truncated else None,
        "elapsed_s": round(clock() - started, 3),
        "live_version": live.version,
        "candidate_version": candidate.version,
        "hits": run.hits(),
    }


def _bound_self(budget_s: float) -> None:
    """Lower this process's priority and cap its CPU time and memory (POSIX; best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(NICENESS)
    try:
        import resource
    except ImportError:  # not POSIX: the parent's kill still bounds the time
        return
    for limit, value in ((resource.RLIMIT_CPU, math.ceil(budget_s + GRACE_S)), (resource.RLIMIT_AS, MEMORY_BYTES)):
        with contextlib.suppress(ValueError, OSError):
            _, hard = resource.getrlimit(limit)
            resource.setrlimit(limit, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def main(read: Reader) -> int:
    """The child: a job on stdin, NDJSON on stdout; its events from ``read``."""
    job = msgspec.json.decode(sys.stdin.buffer.read(), type=BacktestJob)
    _bound_self(job.budget_s)
    out = sys.stdout.buffer

    def emit(line: dict[str, Any]) -> None:
        out.write(msgspec.json.encode(line) + b"\n")
        out.flush()  # a closed pipe (the API process gone) raises here and ends the child

    try:
        emit({"result": run_job(job, emit, time.monotonic, read)})
    except MemoryError:
        emit({"error": {"code": "backtest_too_large", "message": "the back-test needs more memory than allowed"}})
        return 1
    except BrokenPipeError:
        return 1  # nobody listens any more
    except Exception:
        traceback.print_exc()  # to the server's log (stderr is inherited); the client gets no internals
        emit({"error": {"code": "backtest_failed", "message": "the back-test failed; see the server log"}})
        return 1
    return 0


class BacktestFailed(Exception):
    """The child failed or overran its budget; the message says how."""


class BacktestChild:
    """A running back-test child process, bounded whatever its reader does.

    A kill timer ends the child at its deadline (the budget plus :data:`GRACE_S`) even if
    nobody reads its lines, and ``on_exit`` runs only once the child has exited and been
    reaped: so whoever frees a resource in ``on_exit`` (the API's back-test slot) never frees
    it while the child lives. Start one with :func:`start_child`; use it on one event loop.
    """

    def __init__(self, process: asyncio.subprocess.Process, deadline: float, budget_s: float) -> None:
        self.process = process
        self.deadline = deadline  # on the event loop's clock
        self._budget_s = budget_s
        self._overran = False
        self.exited: asyncio.Future[int] = asyncio.ensure_future(process.wait())

    def overrun(self) -> None:
        """The deadline passed: kill the child and say so in its lines."""
        self._overran = True
        self.kill()

    def kill(self) -> None:
        """Stop the child now (SIGKILL); its exit is awaited and reaped by :attr:`exited`."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def stop(self) -> None:
        """Kill the child and wait until it has been reaped."""
        self.kill()
        await asyncio.shield(self.exited)

    async def lines(self) -> AsyncGenerator[dict[str, Any], None]:
        """The child's lines: ``progress``…, then ``result`` or ``error``. Raises BacktestFailed."""
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            line = await stdout.readline()  # ends at the latest when the kill timer ends the child
            if not line:
                code = await asyncio.shield(self.exited)
                if self._overran:
                    raise BacktestFailed(f"the back-test overran its budget of {self._budget_s:g} s; stopped")
                raise BacktestFailed(f"the back-test process ended without an answer (exit {code})")
            message: dict[str, Any] = msgspec.json.decode(line)
            yield message
            if "result" in message or "error" in message:
                return

    async def answers(self) -> AsyncGenerator[dict[str, Any], None]:
        """:meth:`lines`, a failure told as a last ``error`` line: what the API relays."""
        try:
            async with contextlib.aclosing(self.lines()) as lines:
                async for message in lines:
                    yield message
        except BacktestFailed as exc:
            yield {"error": {"code": "backtest_failed", "message": str(exc)}}


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in _CHILD_ENV or k.startswith(("LC_", "COVERAGE_"))}


async def start_child(job: BacktestJob, module: str, on_exit: Callable[[], None] = lambda: None) -> BacktestChild:
    """Start the child on ``job``: ``python -m module``, a runtime's module whose ``main``
    reads its log (:func:`main`); ``on_exit`` runs once it has exited and been reaped.

    If this raises, no child is left running, and ``on_exit`` has run already if a child had
    been started: the caller's own clean-up may call it again, so it must be idempotent.
    """
    loop = asyncio.get_running_loop()
    # -I: no script directory or cwd on sys.path (a ``ringfence/`` in the server's cwd would
    # shadow the package), no PYTHON* variables, no user site; the venv's site-packages stay.
    # A neutral cwd as well, so nothing is read relative to wherever the server was started.
    if job.kafka is None:
        job = msgspec.structs.replace(job, journal=str(Path(job.journal).resolve()))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=_child_env(),
        cwd=_CHILD_CWD,
        limit=MAX_LINE,
    )
    child = BacktestChild(process, loop.time() + job.budget_s + GRACE_S, job.budget_s)
    kill_timer = loop.call_at(child.deadline, child.overrun)

    def reaped(exited: asyncio.Future[int]) -> None:
        kill_timer.cancel()
        if exited.cancelled():  # the loop is shutting down: do not leave the child behind
            child.kill()
        on_exit()

    child.exited.add_done_callback(reaped)
    _RUNNING.add(child.exited)  # the loop keeps only weak references to tasks
    child.exited.add_done_callback(_RUNNING.discard)
    assert process.stdin is not None
    try:
        process.stdin.write(msgspec.json.encode(job))
        await process.stdin.drain()
        process.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child ended early: its lines say so
    except BaseException:  # cancelled while sending the job: leave no child behind
        child.kill()
        await asyncio.shield(child.exited)
        raise
    return child


_RUNNING: set[asyncio.Future[int]] = set()


async def run_in_child(job: BacktestJob, module: str) -> AsyncGenerator[dict[str, Any], None]:
    """Run ``job`` in a child (:func:`start_child`) and yield its lines; closing the iterator
    kills and reaps the child.

    Raises BacktestFailed.
    """
    child = await start_child(job, module)
    try:
        async for message in child.lines():
            yield message
    finally:
        await child.stop()
