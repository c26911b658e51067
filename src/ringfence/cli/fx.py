"""``ringfence fx load|show``: the FX rates ingest converts amounts into the reference currency
with, straight in the store (the data dir's, or PostgreSQL's when ``postgres_dsn`` is set).

A running server picks a load up within seconds (it follows the store's newest table)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from ringfence.cli.common import ConfigOption, DataDirOption, fail, open_configured_store, settings_from
from ringfence.clock import SystemClock
from ringfence.errors import RingfenceError
from ringfence.store.fx import FxRepository

app = typer.Typer(help="Load and show the FX rates amounts are compared at.", no_args_is_help=True)


def _repo(config: ConfigOption, data_dir: DataDirOption) -> FxRepository:
    settings = settings_from(config, data_dir=data_dir)
    try:
        return FxRepository(open_configured_store(settings), settings.reference_currency, settings.fx_max_age_days)
    except RingfenceError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


@app.command()
def load(
    file: Annotated[
        Path, typer.Argument(help="CSV with a header: currency,rate,as_of (1 unit = rate reference units)")
    ],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Replace the rate table with FILE's rates (a new version, audited)."""
    from ringfence.events.fx import read_file

    repo = _repo(config, data_dir)
    now = SystemClock().time()
    try:
        table = repo.load(read_file(file, repo.reference, now)[0], f"cli:{getpass.getuser()}", now)
    except RingfenceError as exc:
        fail(str(exc))
    stale = len(table.stale(now))
    typer.echo(f"FX rates version {table.version}: {len(table.rates)} rates against {table.reference}, {stale} stale")


@app.command()
def show(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Print the rates in force, one line each: currency, rate, as_of, and "stale" if so."""
    repo = _repo(config, data_dir)
    now = SystemClock().time()
    table = repo.current()
    stale = {r.currency for r in table.stale(now)}
    for rate in sorted(table.rates.values(), key=lambda r: r.currency):
        flag = "\tstale" if rate.currency in stale else ""
        typer.echo(f"{rate.currency}\t{rate.rate}\t{rate.as_of.isoformat()}{flag}")
    typer.echo(f"version {table.version}, reference {table.reference}, {len(table.rates)} rates, {len(stale)} stale")
