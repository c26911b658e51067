"""``ringfence audit verify``: check that no audit entry was edited or deleted."""

from __future__ import annotations

import typer

from ringfence.cli.common import ConfigOption, DataDirOption, open_configured_store, settings_from

app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@app.command()
def verify(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Recompute the audit chain; exit 1 naming every edited or deleted entry."""
    settings = settings_from(config, data_dir=data_dir)
    verdict = open_configured_store(settings).verify_audit()
    if verdict.ok:
        typer.echo(f"OK: {verdict.entries} audit entries, chain intact")
        return
    for problem in verdict.problems:
        typer.echo(f"TAMPERED: {problem}", err=True)
    raise typer.Exit(1)
