"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ringfence.config import Settings, load_settings
from ringfence.errors import RingfenceError
from ringfence.runtimes.http_server import bind, serve
from ringfence.store.sql import SqlStore

if TYPE_CHECKING:
    from starlette.applications import Starlette

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


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_configured_store(settings: Settings) -> SqlStore:
    """The store the settings name: PostgreSQL (kafka runtime) when ``postgres_dsn`` is set,
    else the data dir's SQLite file."""
    try:
        if settings.postgres_dsn:
            from ringfence.runtimes.kafka.platform import open_postgres

            return open_postgres(settings)
        from ringfence.runtimes.embedded.platform import open_store

        return open_store(settings.data_dir)
    except RingfenceError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


def listen(settings: Settings) -> socket.socket:
    """Bind the settings' host and port now, so a taken port is one clear line (exit 2) before
    any banner is printed."""
    try:
        return bind(settings)
    except RingfenceError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


def serve_app(app: Starlette, settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve the API ``app`` on ``sock`` (default: bind the settings' host and port) until
    stopped, with the limits of :mod:`ringfence.runtimes.http_server`, draining it as the stop
    begins; exit 1 if it never started."""
    from ringfence.api.app import begin_draining

    try:
        started = serve(app, settings, sock or listen(settings), on_stop=lambda: begin_draining(app))
    except RingfenceError as exc:
        fail(str(exc))
    if not started:
        raise typer.Exit(1)
