"""``ringfence bench``: the end-to-end benchmark (and, with ``--compare``, the peer comparison)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer

from ringfence.bench import compare as comparison
from ringfence.bench import e2e


def bench(
    events: Annotated[int, typer.Option(help="Events per run", min=100)] = 100_000,
    customers: Annotated[int, typer.Option(help="Distinct customers in the traffic", min=10)] = 100_000,
    runs: Annotated[int, typer.Option(help="Runs (fresh data dir each); medians are reported", min=1)] = 3,
    rate: Annotated[float | None, typer.Option(help="Pace the load at this many events/s [default: flat out]")] = None,
    batch: Annotated[int, typer.Option(help="Events per request", min=1, max=10_000)] = 500,
    concurrency: Annotated[int, typer.Option(help="Requests in flight", min=1, max=64)] = 4,
    out: Annotated[Path, typer.Option(help="Folder for the JSON results and the plot")] = Path("bench-results"),
    quick: Annotated[bool, typer.Option("--quick", help="A few seconds: checks that every figure is reported")] = False,
    setting: Annotated[
        list[str] | None,
        typer.Option(help="Repeatable NAME=VALUE server setting, e.g. max_lag_events=20000 (see config.py)"),
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Instead: the keyed windowed count on Ringfence, plain Python, Bytewax")
    ] = False,
) -> None:
    """Benchmark the embedded platform end to end over HTTP (default rule pack, full durability)."""
    out.mkdir(parents=True, exist_ok=True)
    if compare:
        result = comparison.compare(5_000 if quick else events, 1_000 if quick else customers, 1 if quick else runs)
        _write(out / "compare.json", result)
        typer.echo(json.dumps({k: result[k] for k in ("events", "events_per_s", "ratio_to_ringfence")}, indent=2))
        return
    if quick:
        events, customers, runs = 3_000, 1_000, 1
    env = {}
    for item in setting or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="--setting")
        env[f"RINGFENCE_{name.upper()}"] = value
    options = e2e.Options(
        events=events, customers=customers, batch=batch, concurrency=concurrency, rate=rate, runs=runs, env=env
    )
    typer.echo(f"{runs} run(s) of {events} events from {customers} customers...", err=True)
    result = e2e.run(options)
    name = f"e2e-{int(rate)}" if rate else "e2e"
    name += "".join(f"-{item.split('=')[0]}" for item in setting or [])
    _write(out / f"{name}.json", result)
    median_run = _median_run(result["runs"])
    title = f"{events} events, {customers} customers, " + (f"paced at {rate:g}/s" if rate else "flat out")
    try:
        from ringfence.bench.plot import plot_run

        plot_run(median_run, title, out / f"{name}.png")
    except ImportError:
        typer.echo("no plot: install the bench extra (matplotlib)", err=True)
    typer.echo(json.dumps({"summary": result["summary"], "engine_state": result["engine_state"]}, indent=2))


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    middle = statistics.median_low(r["processed_events_per_s"] for r in runs)
    return next(r for r in runs if r["processed_events_per_s"] == middle)


def _write(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=1) + "\n")
    typer.echo(f"wrote {path}", err=True)
