"""``ringfence up``: the whole embedded platform in one process."""

from __future__ import annotations

import contextlib
import functools
from typing import Annotated

import typer

from ringfence.api.app import create_app
from ringfence.api.auth import ApiKeyAuthenticator
from ringfence.cli.common import ConfigOption, DataDirOption, fail, listen, serve_app, settings_from
from ringfence.cli.demo import run_demo_traffic
from ringfence.cli.logs import configure_logging
from ringfence.clock import SystemClock
from ringfence.errors import RingfenceError
from ringfence.runtimes.embedded.platform import Platform

DEMO_KEY_NAME = "demo"
DEMO_SCOPES = ["events:write", "alerts:read", "alerts:write", "rules:read"]


def up(
    data_dir: DataDirOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8080]")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Also generate simulated bank traffic with injected fraud")
    ] = False,
    demo_rate: Annotated[float, typer.Option(help="Events per second of demo traffic", min=1, max=100_000)] = 50.0,
    config: ConfigOption = None,
) -> None:
    """Start API, processor and dispatcher in one process (Ctrl-C stops it cleanly)."""
    settings = settings_from(config, data_dir=data_dir, host=host, port=port)
    configure_logging(settings.log_level)
    sock = listen(settings)  # a taken port is one clear line, before anything else is done
    try:
        platform = Platform(settings)
    except RingfenceError as exc:
        fail(str(exc))
    background = []
    url = f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}"
    typer.echo(f"Ringfence {platform.pack.version} rule pack, data in {settings.data_dir.resolve()}")
    typer.echo(f"API:      {url}   (OpenAPI at {url}/openapi.json with any key, health at {url}/healthz)")
    typer.echo(f"Dashboard: {url}/   (sign in with a person's API key)")
    if demo:
        background.append(functools.partial(run_demo_traffic, platform, rate_per_s=demo_rate))
        now = SystemClock().time()
        with contextlib.suppress(RingfenceError):  # the previous run's demo key, if any
            platform.keys.revoke(DEMO_KEY_NAME, now, actor="ringfence up --demo")
        key = platform.keys.create(DEMO_KEY_NAME, DEMO_SCOPES, now, actor="ringfence up --demo")
        typer.echo("Demo:     simulated traffic with injected fraud is being ingested")
        typer.echo(f"Demo key: {key}   (also signs in to the dashboard)")
        typer.echo(f"Try:      curl -H 'Authorization: Bearer {key}' '{url}/v1/alerts?limit=5'")
    else:
        typer.echo("Keys:     ringfence keys create --name NAME --scope events:write --scope alerts:read")
    serve_app(
        create_app(platform, ApiKeyAuthenticator(platform.keys, platform.clock), background=background), settings, sock
    )
