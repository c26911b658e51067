"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ringfence.config import Settings, load_settings
from ringfence.errors import RingfenceError
from ringfence.store.sql import SqlStore

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


def open_configured_store(settings: Settings) -> SqlStore:
    """The store the settings name: PostgreSQL (kafka runtime) when ``postgres_dsn`` is set,
    else the data dir's SQLite file."""
    try:
        if settings.postgres_dsn:
            from ringfence.runtimes.kafka.platform import open_postgres

            return open_postgres(settings)
        from ringfence.runtimes.embedded import open_store

        return open_store(settings.data_dir)
    except RingfenceError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


def serve_app(app: Any, settings: Settings) -> None:
    """Serve an ASGI app with uvicorn on the settings' host, port and TLS until stopped; exit 1
    if it never started (the port taken, say)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            server_header=False,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            timeout_graceful_shutdown=10,
        )
    )
    try:
        server.run()
    except RingfenceError as exc:
        fail(str(exc))
    if not server.started:
        raise typer.Exit(1)
