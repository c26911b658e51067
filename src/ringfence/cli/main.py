"""The ``ringfence`` command."""

from __future__ import annotations

import sqlite3

import httpx
import typer

from ringfence.cli import audit, bench, fx, infra, keys, quarantine, replay, rules, serve, simulate, up

app = typer.Typer(
    name="ringfence",
    help="Real-time event processing and alerting for digital banking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: "[default: ...]" in a help text is shown, not read as Rich markup
    rich_markup_mode=None,
)
app.command("up")(up.up)
app.command("replay")(replay.replay)
app.command("simulate")(simulate.simulate)
app.command("bench")(bench.bench)
app.add_typer(keys.app, name="keys")
app.add_typer(rules.app, name="rules")
app.add_typer(audit.app, name="audit")
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(fx.app, name="fx")
app.add_typer(serve.app, name="serve")
app.add_typer(infra.kafka_app, name="kafka")
app.add_typer(infra.db_app, name="db")


def main() -> None:
    """Run a command; what the machine or the network refused (a file, a damaged database, a
    server that does not answer, a certificate) is one line on stderr and exit 1, not a traceback:
    a command's own checks name the rest (exit 2)."""
    try:
        app()
    except (OSError, sqlite3.DatabaseError, httpx.TransportError, httpx.InvalidURL) as exc:
        typer.echo(f"error: {_described(exc)}", err=True)
        raise SystemExit(1) from None


def _described(exc: BaseException) -> str:
    if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, a full disk, a missing dir
        return f"a SQLite file of the data dir cannot be used ({exc}): is another process holding it, or its disk full?"
    if isinstance(exc, sqlite3.DatabaseError):
        return (
            f"a SQLite file of the data dir is damaged ({exc}): restore the data dir from a backup, "
            "the store with its -audit-anchor file (one older than the journal's journal.sqlite3-processed is "
            "refused: see docs/security.md)"
        )
    if isinstance(exc, httpx.TransportError | httpx.InvalidURL):
        return f"cannot send to the server: {exc or type(exc).__name__}"
    return str(exc) or type(exc).__name__
