"""The engine alone, in this process, on one core: the default pack over simulator traffic,
every event validated (and, for ``process_raw``, encoded) before the clock starts.

Each pass is a fresh engine: **cold** times its first ``events`` events (every key new to it),
**warm** the next ``events`` (many keys seen). Six ways to feed it:

- ``process``: ``Engine.process(event, ...)``, the call the processing driver makes;
- ``process+changes``: the same with ``take_changes()`` every 2,000 events, as a processor
  batch encodes its changed state for the store;
- ``process_raw`` and ``process_raw+changes``: the compiled core's fast path, which reads the
  stored JSON of the event itself (``encode_event``), skipping Python decoding;
- ``process_raw_many`` and ``process_raw_many+packed``: the calls the embedded processor makes
  of the engine, a batch of stored events at a time (its ``BATCH_SIZE``, the most a batch
  holds when it is behind), then (``+packed``) the batch's changed state packed for the store
  (``take_changes_packed``), with the copies of the states a batch changes that the processor
  keeps to undo a batch a poison event failed (``undo_point``).

Runs are interleaved across engines, so both see the same machine; each figure is the median
of the runs with the range. Wall time is what a caller waits; thread CPU time is what the
engine costs (it discounts time the machine's other work took the core).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ringfence.bench.e2e import FRAUD_RATE, traffic_start
from ringfence.engine.engine import Engine
from ringfence.engine.native import NativeEngine, make_engine
from ringfence.engine.pack import RulePack, load_pack_file
from ringfence.engine.rules import AlertSignal
from ringfence.errors import RulePackError
from ringfence.events.decode import validate_event
from ringfence.events.model import Event, encode_event
from ringfence.runtimes.embedded.processor import BATCH_SIZE
from ringfence.simulate import Traffic

CHANGES_EVERY = 2_000
MODES = (
    "process",
    "process+changes",
    "process_raw",
    "process_raw+changes",
    "process_raw_many",
    "process_raw_many+packed",
)
EVENT_RATE = 2_000.0  # events per second of event time
LATENESS_S = 5.0


@dataclass
class Options:
    events: int = 200_000  # per phase: cold, then warm
    customers: int = 100_000
    runs: int = 3
    engines: tuple[str, ...] = ("native", "python")
    seed: int = 42


@dataclass
class Workload:
    events: list[Event]
    bodies: list[bytes]  # each event's stored JSON
    now: float


def workload(options: Options) -> Workload:
    count = 2 * options.events
    source = Traffic(seed=options.seed, customers=options.customers, fraud_rate=FRAUD_RATE, source_prefix="engine")
    now = time.time()
    start = traffic_start(count / EVENT_RATE)
    events = [validate_event(msgspec.json.encode(e), now) for e in source.stream(start, EVENT_RATE, count)]
    return Workload(events, [encode_event(e) for e in events], now)


Feed = Callable[[int], list[AlertSignal]]  # runs the event at an index; its signals


def feeder(engine: Engine, work: Workload, raw: bool) -> Feed:
    now = work.now
    if raw:
        assert isinstance(engine, NativeEngine)  # the compiled core has the fast path
        process_raw, bodies = engine.process_raw, work.bodies

        def feed_raw(i: int) -> list[AlertSignal]:
            signals: list[AlertSignal] = process_raw(bodies[i], i + 1, 0, now)[0]
            return signals

        return feed_raw
    process, events = engine.process, work.events
    return lambda i: process(events[i], i + 1, 0, now)


Run = Callable[[int, int], list[AlertSignal]]  # runs the events from one index to another; their signals


def batch_feeder(engine: Engine, work: Workload, packed: bool) -> Run:
    """Runs the events from one index to another as the embedded processor does: one
    ``process_raw_many`` call, then (``packed``) the changed state packed for the store, the
    engine keeping what it needs to undo a failed batch (its undo point)."""
    bodies, now = work.bodies, work.now
    if packed:
        engine.undo_point()

    def feed_batch(lo: int, hi: int) -> list[AlertSignal]:
        signals, _ = engine.process_raw_many(bodies[lo:hi], range(lo + 1, hi + 1), [0] * (hi - lo), [now] * (hi - lo))
        if packed:
            engine.take_changes_packed()
            engine.changes_committed()
        return signals

    return feed_batch


def runner(engine: Engine, mode: str, work: Workload, n: int) -> tuple[Run, int]:
    """How ``mode`` runs a stretch of events, and how many a stretch holds."""
    if mode.startswith("process_raw_many"):
        return batch_feeder(engine, work, packed=mode.endswith("+packed")), BATCH_SIZE
    feed = feeder(engine, work, raw=mode.startswith("process_raw"))
    changes = mode.endswith("+changes")

    def run(lo: int, hi: int) -> list[AlertSignal]:
        signals = [s for i in range(lo, hi) for s in feed(i)]
        if changes:
            engine.take_changes()
        return signals

    return run, CHANGES_EVERY if changes else n


def one_pass(pack: RulePack, name: str, mode: str, work: Workload, n: int) -> dict[str, Any]:
    """A fresh engine over the first ``n`` events (cold) and the next ``n`` (warm)."""
    engine = make_engine(pack, LATENESS_S, engine=name)
    run, step = runner(engine, mode, work, n)
    signals: list[AlertSignal] = []
    out: dict[str, Any] = {"engine_class": type(engine).__name__}
    for phase, first in (("cold", 0), ("warm", n)):
        wall, cpu = time.perf_counter(), time.thread_time()
        for lo in range(first, first + n, step):
            signals += run(lo, min(lo + step, first + n))
        out[phase] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.thread_time() - cpu}
    out["signals"] = signals
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def run(options: Options) -> dict[str, Any]:
    """µs/event and events/s of each engine, mode and phase; the ratios of native to python."""
    pack = load_pack_file(None)
    work = workload(options)
    n = options.events
    engines, unavailable = [], {}
    for name in options.engines:
        try:
            engine = make_engine(pack, LATENESS_S, engine=name)
        except RulePackError as exc:
            if len(options.engines) == 1:
                raise
            unavailable[name] = str(exc)
            continue
        raw = isinstance(engine, NativeEngine)
        modes = MODES if raw else tuple(m for m in MODES if not m.startswith("process_raw"))
        engines.append((name, modes))
    timings: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {}
    classes: dict[str, str] = {}
    signals: dict[str, list[AlertSignal]] = {}
    for _ in range(options.runs):
        for name, modes in engines:
            for mode in modes:
                result = one_pass(pack, name, mode, work, n)
                classes[name] = result["engine_class"]
                signals[f"{name} {mode}"] = result["signals"]
                for phase in ("cold", "warm"):
                    timings.setdefault(name, {}).setdefault(mode, {}).setdefault(phase, []).append(result[phase])
    counts = {run_name: len(found) for run_name, found in signals.items()}
    if len(set(counts.values())) > 1:
        raise AssertionError(f"the engines disagree on the signals: {counts}")
    encoded = {msgspec.msgpack.encode(found) for found in signals.values()}
    figures: dict[str, Any] = {}
    for name, by_mode in timings.items():
        for mode, phases in by_mode.items():
            for phase, samples in phases.items():
                wall_us = [s["wall_s"] * 1e6 / n for s in samples]
                cpu_us = [s["cpu_s"] * 1e6 / n for s in samples]
                figures.setdefault(name, {}).setdefault(mode, {})[phase] = {
                    "us_per_event": _spread(wall_us),
                    "cpu_us_per_event": _spread(cpu_us),
                    "events_per_s": round(1e6 / statistics.median(wall_us)),
                }
    return {
        "options": vars(options),
        "events_per_phase": n,
        "signals": next(iter(counts.values()), 0),
        "signals_identical": len(encoded) <= 1,  # every field of every signal, across engines and modes
        "engine_classes": classes,
        "unavailable": unavailable,
        "figures": figures,
        "native_speedup": speedups(figures),
    }


def speedups(figures: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Python's median µs/event over native's, wall and CPU, each native mode against Python's
    same mode (``process_raw`` against ``process``: the fast path against the reference call;
    the batched modes have no Python counterpart measured)."""
    if "native" not in figures or "python" not in figures:
        return {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode, phases in figures["native"].items():
        reference = figures["python"].get(mode.replace("process_raw", "process"))
        if reference is None:
            continue
        out[mode] = {
            clock: {
                phase: round(reference[phase][figure]["median"] / phases[phase][figure]["median"], 2)
                for phase in phases
            }
            for clock, figure in (("wall", "us_per_event"), ("cpu", "cpu_us_per_event"))
        }
    return out


def table(result: dict[str, Any]) -> str:
    """The figures as a person reads them: µs/event, wall (median and range) and thread CPU
    (median), and events/s from the wall median."""
    head = ["engine".ljust(22), "mode".ljust(24)]
    head += [f"{phase} µs/event wall".rjust(26) for phase in ("cold", "warm")]
    head += [f"{phase} cpu".rjust(9) for phase in ("cold", "warm")]
    lines = [" ".join([*head, "cold ev/s".rjust(10), "warm ev/s".rjust(10)])]
    for name, modes in result["figures"].items():
        label = f"{name} ({result['engine_classes'][name]})"
        for mode, phases in modes.items():
            cells = [label.ljust(22), mode.ljust(24)]
            for phase in ("cold", "warm"):
                us = phases[phase]["us_per_event"]
                cells.append(f"{us['median']:.2f} ({us['min']:.2f}-{us['max']:.2f})".rjust(26))
            cells += [f"{phases[p]['cpu_us_per_event']['median']:.2f}".rjust(9) for p in ("cold", "warm")]
            cells += [f"{phases[p]['events_per_s']:,}".rjust(10) for p in ("cold", "warm")]
            lines.append(" ".join(cells))
    for mode, clocks in result["native_speedup"].items():
        wall, cpu = clocks["wall"], clocks["cpu"]
        lines.append(f"native speed-up, {mode}: cold {wall['cold']}x, warm {wall['warm']}x wall")
        lines.append(f"{'':>{len('native speed-up, ' + mode)}}  cold {cpu['cold']}x, warm {cpu['warm']}x cpu")
    lines.append(f"{result['signals']} signals, identical across engines and modes: {result['signals_identical']}")
    lines += [f"{name} unavailable: {why}" for name, why in result["unavailable"].items()]
    return "\n".join(lines)
