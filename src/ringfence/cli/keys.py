"""``ringfence keys create|list|revoke``: API keys, straight in the store (the data dir's,
or PostgreSQL's when ``postgres_dsn`` is set).

Works whether or not a server runs on the data dir: the server reads keys per request.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ringfence.api.signing import public_key_from_pem
from ringfence.cli.common import ConfigOption, DataDirOption, fail, open_configured_store, settings_from
from ringfence.clock import SystemClock, iso
from ringfence.errors import RingfenceError
from ringfence.private_files import read_input
from ringfence.store.keys import ROLES, SCOPES, ApiKeys

MAX_PEM_BYTES = 64 * 1024  # an Ed25519 public key is about 113 bytes of PEM

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


def _keys(config: ConfigOption, data_dir: DataDirOption) -> ApiKeys:
    settings = settings_from(config, data_dir=data_dir)
    return ApiKeys(open_configured_store(settings))


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="A unique name for the key, e.g. the producer")],
    scope: Annotated[list[str] | None, typer.Option("--scope", help=f"Repeatable; one of {', '.join(SCOPES)}")] = None,
    role: Annotated[str | None, typer.Option(help=f"For a person: {', '.join(ROLES)} (a set of scopes)")] = None,
    audience: Annotated[
        list[str] | None, typer.Option(help="Repeatable: only alerts of these audiences (default: all)")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeatable: the event sources this producer key may write (default: any; bind every producer)"
        ),
    ] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            help="Ed25519 public key (PEM): requests with this key must be signed", exists=True, dir_okay=False
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a key. The key is printed once, as the last line of stdout."""
    if role is not None and role not in ROLES:
        fail(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    scopes = sorted(set(scope or ()) | set(ROLES.get(role or "", ())))
    if not scopes:
        fail(f"give the key a --role ({', '.join(ROLES)}) or at least one --scope ({', '.join(SCOPES)})")
    try:
        pem = read_input(signing_key, MAX_PEM_BYTES) if signing_key else None
    except OSError as exc:
        fail(f"cannot read --signing-key {signing_key}: {exc}")
    try:
        public_key = public_key_from_pem(pem) if pem is not None else ""
        key = _keys(config, data_dir).create(
            name, scopes, SystemClock().time(), audiences=audience, signing_key=public_key, sources=source
        )
    except RingfenceError as exc:
        fail(str(exc))
    limited = f", audiences {', '.join(audience)}" if audience else ""
    limited += f", sources {', '.join(sorted(set(source)))}" if source else ""
    typer.echo(
        f"Created key {name!r} with scopes {', '.join(scopes)}{limited}. Store it now; it is not shown again.",
        err=True,
    )
    if not source and ({"events:write", "admin"} & set(scopes)):
        typer.echo("Note: it may send events of any source; bind a producer's key with --source.", err=True)
    typer.echo(key)


@app.command("list")
def list_(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """List keys (never their secrets)."""
    table = Table("name", "key id", "scopes", "audiences", "sources", "created", "last used", "revoked")
    for k in _keys(config, data_dir).list():
        table.add_row(
            k.name,
            k.key_id,
            " ".join(k.scopes),
            " ".join(k.audiences) or "all",
            (" ".join(k.sources) or "any (unbound)") if k.allows("events:write") else "-",
            iso(k.created_at),
            iso(k.last_used_at) if k.last_used_at else "-",
            iso(k.revoked_at) if k.revoked_at else "-",
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped output is not cut


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="Name of the key to revoke")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key; a running server refuses it from the next request."""
    try:
        _keys(config, data_dir).revoke(name, SystemClock().time())
    except RingfenceError as exc:
        fail(str(exc))
    typer.echo(f"Revoked key {name!r}.")
