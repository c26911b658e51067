"""``ringfence serve ingest|process|dispatch|api``: the kafka runtime's services, one a process.

Scale each on its own: ingest and api behind a load balancer, process workers up to the
topics' partition count (they share them as one consumer group), dispatch services up to
the alerts topic's. SIGTERM or Ctrl-C stops a service cleanly; a killed one loses nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Annotated

import typer

from ringfence.cli.common import ConfigOption, fail, listen, serve_app, settings_from
from ringfence.cli.logs import configure_logging
from ringfence.config import Settings
from ringfence.errors import RingfenceError
from ringfence.metrics import Metrics
from ringfence.runtimes.heap import freeze_start_up
from ringfence.runtimes.kafka.metrics_http import serve_metrics
from ringfence.runtimes.kafka.shared_counters import CountersPublisher
from ringfence.store.keys import ApiKeys

app = typer.Typer(help="Run one service of the kafka runtime (Kafka + PostgreSQL).", no_args_is_help=True)

HostOption = Annotated[str | None, typer.Option(help="Interface to listen on [default: 127.0.0.1]")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on [default: 8080]")]
MetricsPortOption = Annotated[
    int | None, typer.Option(help="Serve /metrics (bearer key with alerts:read) on this port of --host")
]


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _serve_metrics(metrics: Metrics, keys: ApiKeys, host: str, port: int) -> None:
    """``--metrics-port``: a taken port is one clear line (exit 2), not a traceback."""
    try:
        serve_metrics(metrics, keys, host, port)
    except OSError as exc:
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")


def _serve_http(settings: Settings, *, ingest: bool) -> None:
    from ringfence.api.app import create_app
    from ringfence.api.auth import ApiKeyAuthenticator
    from ringfence.runtimes.kafka.platform import KafkaPlatform

    sock = listen(settings)  # a taken port is one clear line, before anything else is done
    try:
        platform = KafkaPlatform(settings, ingest=ingest)
    except RingfenceError as exc:
        fail(str(exc))
    role = "ingest" if ingest else "api"
    typer.echo(
        f"Ringfence {role} (kafka runtime) on http://{settings.host}:{settings.port}, pack {platform.pack.version}"
    )
    app = create_app(platform, ApiKeyAuthenticator(platform.keys, platform.clock), ingest_only=ingest)
    serve_app(app, settings, sock)


@app.command()
def ingest(host: HostOption = None, port: PortOption = None, config: ConfigOption = None) -> None:
    """POST /v1/events → the events topic (202 once the brokers acknowledged)."""
    settings = settings_from(config, host=host, port=port)
    configure_logging(settings.log_level)
    _serve_http(settings, ingest=True)


@app.command()
def api(host: HostOption = None, port: PortOption = None, config: ConfigOption = None) -> None:
    """The HTTP API and dashboard over PostgreSQL (alerts, rules, silences, keys, audit)."""
    settings = settings_from(config, host=host, port=port)
    configure_logging(settings.log_level)
    _serve_http(settings, ingest=False)


@app.command()
def process(
    worker_id: Annotated[
        str | None,
        typer.Option(help="Stable name of this worker (its transactional id) [default: the host name]"),
    ] = None,
    metrics_port: MetricsPortOption = None,
    host: HostOption = None,
    config: ConfigOption = None,
) -> None:
    """A process worker: events → keyed stages → alert signals, in Kafka transactions."""
    from ringfence.runtimes.kafka.platform import open_postgres
    from ringfence.runtimes.kafka.worker import ProcessWorker, StagesChanged
    from ringfence.store.packs import PackRepository

    settings = settings_from(config, host=host)
    configure_logging(settings.log_level)
    name = worker_id or os.environ.get("HOSTNAME") or socket.gethostname()
    try:
        packs = PackRepository(open_postgres(settings))
        pack = packs.startup_pack(settings.rule_pack, time.time())
        worker = ProcessWorker(settings, pack, worker_id=name, packs=packs)
        if metrics_port is not None:
            _serve_metrics(worker.metrics, ApiKeys(packs.store), settings.host, metrics_port)
    except RingfenceError as exc:
        fail(str(exc))
    typer.echo(f"Ringfence process worker {name}: stages {', '.join(worker.plan.names)}, pack {pack.version}")
    counters = CountersPublisher(packs.store, worker.metrics)
    counters.start()
    freeze_start_up()
    try:
        worker.run(_stop_on_signals())
    except StagesChanged as exc:  # its supervisor starts it again, on the pack activated
        fail(str(exc))  # (or on the file its rule_pack setting names, which it activates)
    finally:
        counters.stop()


@app.command()
def dispatch(metrics_port: MetricsPortOption = None, host: HostOption = None, config: ConfigOption = None) -> None:
    """A dispatch service: alert signals → dedup, silences, groups, routes → notifications."""
    from ringfence.alerts.config import load_alerting
    from ringfence.alerts.dispatcher import Dispatcher
    from ringfence.clock import SystemClock
    from ringfence.engine.pack import load_pack
    from ringfence.runtimes.kafka.alert_feed import FeedWriter
    from ringfence.runtimes.kafka.dispatch import DispatchService
    from ringfence.runtimes.kafka.platform import open_postgres
    from ringfence.store.packs import PackRepository

    settings = settings_from(config, host=host)
    configure_logging(settings.log_level)
    try:
        store = open_postgres(settings)
        packs = PackRepository(store)

        def auto_resolve() -> dict[str, float]:
            active = packs.active()
            return load_pack(active.text, stored=True).auto_resolve if active is not None else {}

        metrics = Metrics()
        dispatcher = Dispatcher(
            store,
            load_alerting(settings.alerting),
            SystemClock(),
            metrics,
            stream=FeedWriter(store),  # what every api process shows live
            auto_resolve=auto_resolve,
        )
        service = DispatchService(settings, store, dispatcher, metrics)
        if metrics_port is not None:
            _serve_metrics(metrics, ApiKeys(store), settings.host, metrics_port)
    except RingfenceError as exc:
        fail(str(exc))
    typer.echo("Ringfence dispatch service (kafka runtime)")
    counters = CountersPublisher(store, metrics)
    counters.start()
    freeze_start_up()
    try:
        service.run(_stop_on_signals())
    finally:
        counters.stop()
