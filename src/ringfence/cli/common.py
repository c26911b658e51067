"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ringfence.config import Settings, load_settings
from ringfence.errors import RingfenceError

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the embedded runtime keeps its files [default: ./ringfence-data]"),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Settings file (TOML)", exists=True, dir_okay=False)
]


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except RingfenceError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
