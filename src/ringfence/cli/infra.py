"""``ringfence kafka init`` and ``ringfence db migrate``: the kafka runtime's infrastructure."""

from __future__ import annotations

import typer

from ringfence.cli.common import ConfigOption, fail, settings_from
from ringfence.errors import RingfenceError

kafka_app = typer.Typer(help="The kafka runtime's topics.", no_args_is_help=True)
db_app = typer.Typer(help="The kafka runtime's PostgreSQL store.", no_args_is_help=True)


@kafka_app.command("init")
def kafka_init(config: ConfigOption = None) -> None:
    """Create the topics the rule pack's stages need (existing ones are kept as they are), and
    copy the per-stage changelogs of an older version into the one changelog (refused while
    workers run, if there is anything to copy)."""
    from ringfence.engine.pack import load_pack_file
    from ringfence.engine.stages import plan_stages
    from ringfence.runtimes.kafka.migrate import copy_v2_changelogs
    from ringfence.runtimes.kafka.topics import create_topics, topics_of

    settings = settings_from(config)
    try:
        # its stages only: a pack the services would refuse as new is refused by them, and a file
        # already running is never refused by a check added since (an upgrade runs this)
        plan = plan_stages(load_pack_file(settings.rule_pack, stored=True))
        created = create_topics(settings, plan)
        copied = copy_v2_changelogs(settings)
    except RingfenceError as exc:
        fail(str(exc))
    topics = topics_of(settings)
    for name in sorted(topics.specs(plan)):
        typer.echo(f"{'created' if name in created else 'exists '}  {name}")
    typer.echo(f"{len(created)} created; {topics.partitions} partitions each, replication {topics.replication}")
    if copied:
        typer.echo(f"copied {copied} entries of the per-stage changelogs (.changelog.STAGE.v2) into {topics.changelog}")


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None) -> None:
    """Bring the PostgreSQL schema to this version of Ringfence (safe to run again)."""
    from ringfence.store.postgres import PostgresStore

    settings = settings_from(config)
    if not settings.postgres_dsn:
        fail("set postgres_dsn (RINGFENCE_POSTGRES_DSN=postgresql://user@host/db)")
    try:
        store = PostgresStore(settings.postgres_dsn, pool_size=1)
        applied = store.migrate()
        version = store.schema_version()
        store.close()
    except RingfenceError as exc:
        fail(str(exc))
    typer.echo(f"applied {', '.join(map(str, applied))}; " if applied else "nothing to apply; ", nl=False)
    typer.echo(f"schema version {version}")
