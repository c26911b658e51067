"""The ``ringfence`` command."""

from __future__ import annotations

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
    app()
