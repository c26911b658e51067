"""``ringfence bench``: the end-to-end benchmark (short or ``--sustained``), and, one at a time,
the engine alone, its state size, recovery after kill -9, the peer comparison and the
differential run of the two engines. See benchmarks/README.md."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer

from ringfence.bench import compare as comparison
from ringfence.bench import e2e, engine_only, recovery, state_size

TARGET_EVENTS_PER_S = 50_000  # issue #17's sustained target: a flat-out run's traffic lasts that long at it
SUSTAINED_MIN_EVENTS = 1_000_000
QUICK_SUSTAINED_RATE = 5_000.0  # events/s: 40,000 last 8 s, past a 1 s warm-up and a 2 s window


def bench(
    events: Annotated[int | None, typer.Option(help="Events per run [default: by mode]", min=100)] = None,
    customers: Annotated[int | None, typer.Option(help="Distinct customers [default: by mode]", min=10)] = None,
    runs: Annotated[int, typer.Option(help="Runs; medians and ranges are reported", min=1)] = 3,
    rate: Annotated[float | None, typer.Option(help="Pace the load at this many events/s [default: flat out]")] = None,
    batch: Annotated[
        int | None, typer.Option(help="Events per request [default: 500; sustained 2,000]", min=1, max=10_000)
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Requests in flight [default: 4; sustained 3]", min=1, max=64)
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the JSON results and the plot")] = Path("bench-results"),
    quick: Annotated[bool, typer.Option("--quick", help="A few seconds: checks that every figure is reported")] = False,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeatable NAME=VALUE server setting, e.g. engine=native or max_lag_events=20000 (see config.py)"
        ),
    ] = None,
    sustained: Annotated[
        bool,
        typer.Option(
            "--sustained",
            help="Steady state: 1M customers, batches of 2,000; figures over --duration s, 1M events, after --warmup",
        ),
    ] = False,
    duration: Annotated[float, typer.Option(help="Sustained: seconds measured after the warm-up", min=1)] = 120.0,
    warmup: Annotated[float, typer.Option(help="Sustained: seconds left out first", min=0)] = 30.0,
    traffic_dir: Annotated[
        Path | None, typer.Option(help="Keep the generated traffic here and reuse it [default: a temporary folder]")
    ] = None,
    event_ids: Annotated[
        str | None,
        typer.Option(
            help="End to end: the traffic's event ids, uuid (random, as the event contract advises producers) "
            "or sequential (the simulator's, which the journal's duplicate index only appends to) [default: uuid]"
        ),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare", help="Instead: the keyed windowed count on Ringfence's engines, plain Python, Bytewax"
        ),
    ] = False,
    engine_only_mode: Annotated[
        bool, typer.Option("--engine-only", help="Instead: the engine alone on one core, cold and warm keys")
    ] = False,
    state_size_mode: Annotated[
        bool, typer.Option("--state-size", help="Instead: engine state per active customer (RSS growth, tracemalloc)")
    ] = False,
    recovery_mode: Annotated[
        bool, typer.Option("--recovery", help="Instead: kill -9 with a loaded server, restart, check nothing is lost")
    ] = False,
    differential: Annotated[
        bool,
        typer.Option("--differential", help="Instead: the native and Python engines side by side, compared exactly"),
    ] = False,
    engine: Annotated[
        str, typer.Option(help="In-process modes: native, python or both (a server's: --setting engine=...)")
    ] = "both",
    seeds: Annotated[str, typer.Option(help="Differential: comma-separated traffic seeds")] = "1,2,3",
) -> None:
    """Benchmark the embedded platform end to end over HTTP (default rule pack, full durability);
    or, with one mode flag, the engine alone, its state size, recovery, peers, or the differential run."""
    modes = {
        "compare": compare,
        "engine-only": engine_only_mode,
        "state-size": state_size_mode,
        "recovery": recovery_mode,
        "differential": differential,
    }
    chosen = [name for name, on in modes.items() if on]
    if len(chosen) > 1 or (chosen and sustained):
        raise typer.BadParameter(f"one mode at a time, not {', '.join(chosen + ['sustained'] * sustained)}")
    if engine not in ("both", "native", "python"):
        raise typer.BadParameter(f"{engine!r}: native, python or both", param_hint="--engine")
    if engine != "both" and not (compare or engine_only_mode or state_size_mode):
        raise typer.BadParameter("only for --compare, --engine-only, --state-size; a server's: --setting engine=...")
    if event_ids is not None and (chosen or event_ids not in e2e.EVENT_IDS):
        problem = "only for end-to-end runs" if chosen else f"{event_ids!r}: {' or '.join(e2e.EVENT_IDS)}"
        raise typer.BadParameter(problem, param_hint="--event-ids")
    engines = ("native", "python") if engine == "both" else (engine,)
    suffix = "" if engine == "both" else f"-{engine}"
    env = _settings(setting or [])
    out.mkdir(parents=True, exist_ok=True)
    if compare:
        result = comparison.compare(
            5_000 if quick else events or 100_000,
            1_000 if quick else customers or 100_000,
            1 if quick else runs,
            engines,
        )
        _write(out / f"compare{suffix}.json", result)
        _echo(result, "events", "engine_classes", "unavailable", "events_per_s", "ratio_to_bytewax")
    elif engine_only_mode:
        options = engine_only.Options(
            events=2_000 if quick else events or 200_000,
            customers=500 if quick else customers or 100_000,
            runs=1 if quick else runs,
            engines=engines,
        )
        result = engine_only.run(options)
        _write(out / f"engine-only{suffix}.json", result)
        typer.echo(engine_only.table(result))
    elif state_size_mode:
        result = _state_size(
            customers=2_000 if quick else customers or 1_000_000, events=4_000 if quick else events, engines=engines
        )
        _write(out / f"state-size{suffix}.json", result)
        _echo(result, "events", "customers_active", "engines")
    elif recovery_mode:
        result = recovery.run(
            recovery.Options(
                customers=300 if quick else customers or 1_000_000,
                events=6_000 if quick else events or 2_000_000,
                batch=100 if quick else batch or 2_000,
                kills=2 if quick else runs,
                env=env,
                traffic_dir=traffic_dir,
            )
        )
        _write(out / f"recovery{_setting_suffix(setting)}.json", result)
        _echo(result, "events", "customers_loaded", "feature_states_loaded", "alerts", "summary", "checks")
        if not result["ok"]:
            raise typer.Exit(1)
    elif differential:
        _differential(2_000 if quick else events or 1_000_000, [1] if quick else _seeds(seeds), customers, out)
    else:
        _e2e(
            events,
            customers,
            runs,
            rate,
            batch,
            concurrency,
            quick,
            sustained,
            duration,
            warmup,
            traffic_dir,
            event_ids or "uuid",
            env,
            setting,
            out,
        )


def _e2e(
    events: int | None,
    customers: int | None,
    runs: int,
    rate: float | None,
    batch: int | None,
    concurrency: int | None,
    quick: bool,
    sustained: bool,
    duration: float,
    warmup: float,
    traffic_dir: Path | None,
    event_ids: str,
    env: dict[str, str],
    setting: list[str] | None,
    out: Path,
) -> None:
    if sustained:
        options = e2e.Options(
            customers=customers or 1_000_000,
            batch=batch or 2_000,
            concurrency=concurrency or 3,
            rate=rate,
            runs=runs,
            measure_state=False,  # --state-size measures it at scale, per engine
            env=env,
            event_rate=e2e.REFERENCE_EVENT_RATE,
            warmup_s=warmup,
            duration_s=duration,
            min_events=SUSTAINED_MIN_EVENTS,
            traffic_dir=traffic_dir,
            event_ids=event_ids,
        )
        if quick:
            options.customers, options.batch, options.concurrency, options.runs = 2_000, 500, 2, 1
            options.warmup_s, options.duration_s, options.min_events = 1.0, 2.0, 2_000
            # paced, so its traffic outlasts the window on a fast machine as on a loaded one
            options.rate = rate or QUICK_SUSTAINED_RATE
        # enough traffic for the window at the pace, or at the target rate when flat out
        paced = options.rate
        needed_s = options.warmup_s + max(options.duration_s, options.min_events / paced if paced else 0.0)
        options.events = events or (40_000 if quick else math.ceil(1.1 * needed_s * (paced or TARGET_EVENTS_PER_S)))
        name = "sustained"
    else:
        options = e2e.Options(
            events=events or 100_000,
            customers=customers or 100_000,
            batch=batch or 500,
            concurrency=concurrency or 4,
            rate=rate,
            runs=runs,
            env=env,
            traffic_dir=traffic_dir,
            event_ids=event_ids,
        )
        if quick:  # a second and a half of event time: scenarios often enough that some alert at once
            options.events, options.customers, options.runs, options.fraud_rate = 3_000, 1_000, 1, 0.05
        name = "e2e"
    name += (f"-{int(rate)}" if rate else "") + _setting_suffix(setting)
    name += "-sequential-ids" if event_ids == "sequential" else ""
    shape = f"paced at {options.rate:g}/s" if options.rate else "flat out"
    typer.echo(
        f"{options.runs} run(s): {options.events} events from {options.customers} customers, {shape}...", err=True
    )
    result = e2e.run(options)
    _write(out / f"{name}.json", result)
    median_run = _median_run(result["runs"])
    title = f"{options.events} events, {options.customers} customers, {shape}"
    try:
        from ringfence.bench.plot import plot_run

        plot_run(median_run, title, out / f"{name}.png")
    except ImportError:
        typer.echo("no plot: install the bench extra (matplotlib)", err=True)
    _echo(result, "summary", "engine_state")


def _state_size(customers: int, events: int | None, engines: tuple[str, ...]) -> dict[str, Any]:
    """Per engine, the state over ``events`` (default: two per customer, so most are active)."""
    options = e2e.Options(customers=customers, events=events or 2 * customers, event_rate=e2e.REFERENCE_EVENT_RATE)
    with e2e.traffic(options) as path:
        return state_size.compare_engines(path, engines)


def _differential(events: int, seeds: list[int], customers: int | None, out: Path) -> None:
    from ringfence.bench.differential import run_differential

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    if customers is None:  # the differential's own population
        report = run_differential(events, seeds, progress=progress)
    else:
        report = run_differential(events, seeds, customers=customers, progress=progress)
    path = out / "differential.txt"
    path.write_text(str(report) + "\n")
    typer.echo(str(report))
    typer.echo(f"wrote {path}", err=True)
    if not report.ok:
        raise typer.Exit(1)


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: write seeds as 1,2,3", param_hint="--seeds") from None


def _settings(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="--setting")
        env[f"RINGFENCE_{name.upper()}"] = value
    return env


def _setting_suffix(items: list[str] | None) -> str:
    """Result files named by the settings that shaped them, e.g. ``-engine-native``."""
    return "".join("-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", item.replace("=", "-")) for item in items or [])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    middle = statistics.median_low(r["processed_events_per_s"] for r in runs)
    return next(r for r in runs if r["processed_events_per_s"] == middle)


def _echo(result: dict[str, Any], *names: str) -> None:
    typer.echo(json.dumps({name: result[name] for name in names}, indent=2))


def _write(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=1) + "\n")
    typer.echo(f"wrote {path}", err=True)
