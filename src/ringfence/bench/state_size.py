"""Bytes of engine state per active customer: what an engine holds after running the default
pack over simulated traffic. "Per customer" counts every key an event of theirs creates: their
own features and patterns, and those of their cards, devices and IPs.

Two ways to see it, each on the engine alone (a server's RSS also holds SQLite's page cache,
the interpreter and the API):
- ``tracemalloc``: the Python heap the state holds. Exact for the Python engine; blind to the
  compiled core's memory, which Rust allocates outside Python's allocator.
- ``rss``: how much the resident memory of a fresh process grows. Sees both engines, and
  what the allocator really costs (headers, fragmentation, pages it keeps); memory freed to
  glibc's malloc (the compiled core's allocator) is trimmed back to the system before each
  reading.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import multiprocessing
import os
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from ringfence.bench import procstat
from ringfence.engine.engine import Engine
from ringfence.engine.native import make_engine
from ringfence.engine.pack import load_pack_file
from ringfence.events.decode import validate_event
from ringfence.events.model import Event

CHANGES_EVERY = 2_000  # events between take_changes(), as a processor batch does
WARM_UP = 500  # events through a throwaway engine before a fresh process's baseline
TRACED_MAX_EVENTS = 500_000  # tracemalloc slows the engine about 5x: a cross-check of RSS at moderate sizes


class _Customer(msgspec.Struct):
    customer_id: str | None = None


def customers_of(lines: Iterable[bytes]) -> set[str]:
    """The distinct customers of NDJSON traffic."""
    decoder = msgspec.json.Decoder(_Customer)
    return {c for line in lines if (c := decoder.decode(line).customer_id) is not None}


def decoded(lines: Iterable[bytes], now: float) -> Iterator[Event]:
    for line in lines:
        yield validate_event(line.rstrip(b"\n"), now)


def run_engine(engine: Engine, events: Iterable[Event], now: float) -> None:
    """Process ``events`` as a processor does, dropping the encoded changes each batch (they are
    the store's, not the state's)."""
    for offset, event in enumerate(events, 1):
        engine.process(event, offset, 0, now)
        if offset % CHANGES_EVERY == 0:
            engine.take_changes()
    engine.take_changes()


def measure(lines: Iterable[bytes], now: float) -> dict[str, Any]:
    """The Python engine's state over NDJSON ``lines``, by tracemalloc, in this process (the
    end-to-end benchmark's figure)."""
    events = list(decoded(lines, now))
    engine = Engine(load_pack_file(None), allowed_lateness_s=5.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    run_engine(engine, events, now)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    customers = len({e.customer_id for e in events if e.customer_id})
    return _figures(len(events), customers, engine.state_size(), held)


def _figures(events: int, customers: int, states: int, held: int) -> dict[str, Any]:
    return {
        "events": events,
        "customers": customers,
        "feature_states": states,
        "state_bytes": held,
        "bytes_per_customer": round(held / max(1, customers)),
        "bytes_per_feature_state": round(held / max(1, states)),
    }


def _resident_after_trim() -> int:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS shows what is held
    return round(procstat.rss_mib([os.getpid()]) * 1024 * 1024)


def held_in_fresh_process(path: str, engine_name: str, method: str, now: float) -> dict[str, Any]:
    """Run in a spawned process: the state one engine holds after ``path``'s traffic."""
    pack = load_pack_file(None)
    with Path(path).open("rb") as lines:  # first use (imports, caches) before the baseline
        run_engine(make_engine(pack, 5.0, engine=engine_name), decoded(itertools.islice(lines, WARM_UP), now), now)
    engine = make_engine(pack, 5.0, engine=engine_name)
    started = time.perf_counter()
    with Path(path).open("rb") as lines:
        if method == "tracemalloc":
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            run_engine(engine, decoded(lines, now), now)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
        else:
            before = _resident_after_trim()
            run_engine(engine, decoded(lines, now), now)
            held = _resident_after_trim() - before
    return {
        "engine_class": type(engine).__name__,
        "method": method,
        "feature_states": engine.state_size(),
        "state_bytes": held,
        "rss_mib": round(procstat.rss_mib([os.getpid()]), 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def compare_engines(path: Path, engines: Iterable[str]) -> dict[str, Any]:
    """Each engine's state over the traffic in ``path``, each measured in a fresh process: RSS
    growth for every engine, and, up to ``TRACED_MAX_EVENTS``, tracemalloc as well for the
    Python engine (the heap it holds, to set against its RSS)."""
    with path.open("rb") as lines:
        customers = len(customers_of(lines))
    with path.open("rb") as lines:
        events = sum(1 for _ in lines)
    now = time.time()
    measured: dict[str, Any] = {}
    spawn = multiprocessing.get_context("spawn")
    for name in engines:
        for method in ("rss", "tracemalloc") if name == "python" and events <= TRACED_MAX_EVENTS else ("rss",):
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                result = pool.submit(held_in_fresh_process, str(path), name, method, now).result()
            held = result["state_bytes"]
            result["bytes_per_customer"] = round(held / max(1, customers))
            result["bytes_per_feature_state"] = round(held / max(1, result["feature_states"]))
            measured[f"{name}_{method}"] = result
    return {"events": events, "customers_active": customers, "engines": measured}
