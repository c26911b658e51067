"""``ringfence quarantine list|redrive``: events the engine or the state codec could not handle,
straight in the store (the data dir's, or PostgreSQL's when ``postgres_dsn`` is set)."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from ringfence.cli.common import ConfigOption, DataDirOption, fail, open_configured_store, settings_from
from ringfence.clock import SystemClock
from ringfence.errors import RingfenceError
from ringfence.store.quarantine import STATUSES, QuarantineRepository

app = typer.Typer(help="List and re-drive quarantined (poison) events.", no_args_is_help=True)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(metavar="STATUS", help=f"Only these: {', '.join(STATUSES)}")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, metavar="N", help="How many, newest first")] = 50,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List quarantined events, newest first (never their bodies)."""
    if status is not None and status not in STATUSES:
        fail(f"unknown status {status!r}; choose from {', '.join(STATUSES)}")
    repo = QuarantineRepository(open_configured_store(settings_from(config, data_dir=data_dir)))
    entries, _ = repo.entries(status, limit)
    for e in entries:  # one line each, so scripts can read it too
        d = e.to_dict()
        where = f"{d['origin']}[{d['partition']}]@{d['offset']}"
        event = f"{d['source']} / {d['event_id']}"
        typer.echo(f"{d['id']}\t{d['quarantined_at']}\t{event}\t{d['type']}\t{where}\t{d['status']}\t{d['reason']}")
    counts = repo.counts()
    typer.echo(", ".join(f"{n} {s}" for s, n in counts.items()))


@app.command()
def redrive(
    entry_id: Annotated[int, typer.Argument(metavar="ID", help="The id `quarantine list` shows", min=1, max=2**63 - 1)],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run a quarantined event again, after a rule pack fix (audited). The embedded processor
    runs it within seconds (or at its next start); the kafka runtime gets it back on its topic."""
    settings = settings_from(config, data_dir=data_dir)
    repo = QuarantineRepository(open_configured_store(settings))
    now = SystemClock().time()
    try:
        entry = repo.request_redrive(entry_id, f"cli:{getpass.getuser()}", now)
        if settings.postgres_dsn:
            from ringfence.runtimes.kafka.quarantine import reproduce

            try:
                reproduce(settings, entry)
            except RuntimeError as exc:
                repo.release(entry_id)
                fail(str(exc))
            entry = repo.finish_redrive(entry_id, SystemClock().time())
    except RingfenceError as exc:
        fail(str(exc))
    typer.echo(f"quarantined event {entry.id} ({entry.event.source}/{entry.event.event_id}): {entry.status}")
