"""``ringfence audit verify``: check that no audit entry was edited, deleted or cut off."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from ringfence.cli.common import ConfigOption, DataDirOption, fail, open_configured_store, settings_from
from ringfence.store import audit as audit_chain

app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)

HeadOption = Annotated[
    str | None,
    typer.Option(
        "--head",
        metavar="ENTRY:HASH",
        help="Also check against a head from the logs ('audit head: entry N, hash H'), e.g. the last one shipped",
    ),
]


def _parse_head(value: str) -> audit_chain.Head:
    match = re.fullmatch(r"([0-9]{1,18}):([0-9a-f]{64})", value.strip())
    if match is None:
        fail(f"--head must be ENTRY:HASH (a number and 64 hex digits), got {value!r}")
        raise AssertionError  # unreachable: fail() exits
    return audit_chain.Head(int(match.group(1)), match.group(2))


@app.command()
def verify(data_dir: DataDirOption = None, head: HeadOption = None, config: ConfigOption = None) -> None:
    """Recompute the audit chain, and check it against the heads anchored outside the database
    (the embedded runtime's anchor file; --head from the logs): exit 1 naming every edited
    or deleted entry, or a trail cut off or rolled back."""
    settings = settings_from(config, data_dir=data_dir)
    expected = _parse_head(head) if head is not None else None
    store = open_configured_store(settings)
    verdict = store.verify_audit()
    problems = list(verdict.problems)
    for note in verdict.notes:
        typer.echo(f"NOTE: {note}", err=True)
    if expected is not None:
        problems += audit_chain.check_anchored(store.conn(), [expected])
    if not problems:
        checked = f"; entry {expected.seq} is the one logged" if expected is not None else ""
        typer.echo(f"OK: {verdict.entries} audit entries, chain intact{checked}")
        return
    for problem in problems:
        typer.echo(f"TAMPERED: {problem}", err=True)
    raise typer.Exit(1)
