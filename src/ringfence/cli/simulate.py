"""``ringfence simulate``: realistic bank traffic with injected, labelled scenarios.

Writes events to a file, posts them to a running server or writes them into the kafka
runtime's topics (the path ``serve ingest`` takes), labels to a separate file, and with
``--report`` scores a rule pack's detections on the same traffic.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ringfence.bench.servers import post_events
from ringfence.cli.common import ConfigOption, fail, settings_from
from ringfence.config import Settings
from ringfence.engine.pack import RulePack, load_pack_file
from ringfence.errors import RulePackError
from ringfence.simulate.report import HELD_OUT_FROM, SeedsReport, evaluate
from ringfence.simulate.scenarios import SCENARIOS
from ringfence.simulate.traffic import Traffic

BATCH = 1_000


MAX_CUSTOMERS = 10_000_000  # the generator's memory grows with them (10**11 took 3 GB and failed)


def simulate(
    events: Annotated[
        int,
        typer.Option(
            help="How many events (with --report and nowhere else to send them, then as many as the "
            "scenarios under way need to finish)",
            min=1,
        ),
    ] = 100_000,
    customers: Annotated[int, typer.Option(help="Distinct customers", min=100, max=MAX_CUSTOMERS)] = 100_000,
    rate: Annotated[float, typer.Option(help="Events per second of simulated time", min=0.1, max=1e6)] = 50.0,
    fraud_rate: Annotated[float, typer.Option(help="Chance per event that a scenario starts", min=0, max=1)] = 0.001,
    seed: Annotated[int, typer.Option(help="Random seed (same seed and --start, same traffic)")] = 7,
    seeds: Annotated[
        int,
        typer.Option(
            help="With --report: score the traffic of this many seeds, from --seed on, and report the mean "
            f"and the worst seed (seeds from {HELD_OUT_FROM} on are held out from the default pack's tuning)",
            min=1,
            max=100,
        ),
    ] = 1,
    start: Annotated[
        str | None, typer.Option(help="Event time of the first event (RFC 3339) [default: now - duration]")
    ] = None,
    scenario: Annotated[list[str] | None, typer.Option(help="Only these scenarios (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the events here (NDJSON)")] = None,
    labels: Annotated[Path | None, typer.Option(help="Write the scenario labels here (JSON)")] = None,
    url: Annotated[str | None, typer.Option(help="Post the events to this running server")] = None,
    key: Annotated[str | None, typer.Option(help="API key for --url", envvar="RINGFENCE_API_KEY")] = None,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka",
            help="Write the events into the kafka runtime's topics, as `serve ingest` does "
            "(settings: kafka_bootstrap, postgres_dsn)",
        ),
    ] = False,
    config: ConfigOption = None,
    report: Annotated[bool, typer.Option("--report", help="Score the rule pack's detections on this traffic")] = False,
    rules: Annotated[Path | None, typer.Option(help="Rule pack for --report [default: the packaged one]")] = None,
    report_out: Annotated[Path | None, typer.Option(help="Write the report here (.md or .json)")] = None,
) -> None:
    """Generate traffic with labelled fraud and incident scenarios; send it, save it, or score it."""
    if not math.isfinite(rate):  # nan passes a range's bounds
        fail("--rate must be a number of events a second, 0.1 to 1,000,000")
    unknown = sorted(set(scenario or ()) - set(SCENARIOS))
    if unknown:
        fail(f"unknown scenario(s) {unknown}; choose from {', '.join(sorted(SCENARIOS))}")
    if seeds > 1 and (out or url or kafka or labels or not report):
        fail("--seeds scores several seeds' traffic: use it with --report only (not --out, --url, --kafka, --labels)")
    if not (out or url or kafka or report):
        fail("say where the traffic goes: --out FILE, --url URL, --kafka, or --report")
    if url and not key:
        fail("--url needs an API key with events:write (--key or RINGFENCE_API_KEY)")
    begin = time.time() - events / rate
    if start is not None:
        begin = _rfc3339(start)
    only = tuple(scenario) if scenario else None
    if seeds > 1:
        pack = _pack(rules)
        scored = {}
        for each in range(seed, seed + seeds):
            traffic = _traffic(each, customers, fraud_rate, only, events)
            typer.echo(f"seed {each}: {events:,} events ...")
            stream = traffic.stream(begin, rate, events, finish_scenarios=True)
            scored[each] = evaluate(stream, traffic.labels, pack)
        summary = SeedsReport(scored)
        typer.echo(summary.markdown())
        if report_out is not None:
            body = json.dumps(summary.to_dict(), indent=2) if report_out.suffix == ".json" else summary.markdown()
            report_out.write_text(body + "\n")
        return
    for written in (labels, report_out):  # before a single event goes anywhere: a bad path is not found after them
        if written is not None:
            with written.open("a"):
                pass
    traffic = _traffic(seed, customers, fraud_rate, only, events)
    finish = report and not (out or url or kafka)  # traffic that goes nowhere else: as many events as scoring needs
    with _sinks(url, key, settings_from(config) if kafka else None) as (sinks, http, topics):
        stream = _tee(traffic.stream(begin, rate, events, finish_scenarios=finish), out, sinks)
        progress = Progress(TextColumn("simulate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with progress:
            task = progress.add_task("simulate", total=events)
            counted = _counting(stream, lambda: progress.advance(task))
            if report:
                result = evaluate(counted, traffic.labels, _pack(rules))
            else:
                for _ in counted:
                    pass
    if labels is not None:
        labels.write_text(json.dumps([label.to_dict() for label in traffic.labels], indent=1) + "\n")
    total = result.events if report else events
    extra = f" (the last {total - events:,} to finish the scenarios under way)" if total > events else ""
    typer.echo(f"{total:,} events{extra}, {len(traffic.labels)} injected scenarios")
    if report:
        text = result.markdown()
        typer.echo(text)
        if report_out is not None:
            body = json.dumps(result.to_dict(), indent=2) if report_out.suffix == ".json" else text
            report_out.write_text(body + "\n")
    for sink in (http, topics):
        if sink is not None and sink.rejected:
            such = "; ".join(sink.reasons)
            fail(f"{sink.name} rejected {sink.rejected} of the events, such as {such}")


def _rfc3339(text: str) -> float:
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        fail(f"--start {text!r} is not an RFC 3339 time with its offset, such as 2026-11-20T00:00:00Z")
    if not 2000 <= moment.year <= 2100:  # ingest refuses an event before 2000
        fail(f"--start {text!r} must be in the years 2000 to 2100")
    return moment.timestamp()


def _traffic(seed: int, customers: int, fraud_rate: float, only: tuple[str, ...] | None, events: int) -> Traffic:
    return Traffic(
        seed=seed,
        customers=customers,
        fraud_rate=fraud_rate,
        scenarios=only,
        dormant=max(3, int(events * fraud_rate / 10)),
    )


def _pack(rules: Path | None) -> RulePack:
    try:
        return load_pack_file(rules)
    except RulePackError as exc:
        fail(str(exc))


@contextmanager
def _sinks(
    url: str | None, key: str | None, kafka: Settings | None
) -> Iterator[tuple[list[Callable[[list[str]], None]], _HttpSink | None, _KafkaSink | None]]:
    """Where batches of events go: ``url`` (with ``key``), and the topics of the kafka runtime
    that ``kafka`` names."""
    topics = _KafkaSink(kafka) if kafka is not None else None
    http = _HttpSink(url, key) if url else None
    sinks: list[Callable[[list[str]], None]] = [sink.send for sink in (http, topics) if sink is not None]
    try:
        yield sinks, http, topics
    finally:
        if http is not None:
            http.close()
        if topics is not None:
            topics.close()


class _Rejections:
    """Events a sink's ingest rejected: how many, and the first few reasons, for the user."""

    def __init__(self) -> None:
        self.rejected = 0
        self.reasons: list[str] = []

    def count(self, event_id: str | None, index: int, why: str) -> None:
        self.rejected += 1
        if len(self.reasons) < 3:
            self.reasons.append(f"{event_id or f'event {index}'}: {why}")


class _HttpSink(_Rejections):
    """A running server's ``POST /v1/events``, waiting out its backpressure; the events it
    rejects (a key limited to other sources, say) are counted, and the run fails at its end."""

    name = "the server"

    def __init__(self, url: str, key: str | None) -> None:
        super().__init__()
        self.client = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"})

    def send(self, lines: list[str]) -> None:
        try:
            answer = post_events(self.client, "\n".join(lines).encode())
        except RuntimeError as exc:  # an answer other than 202, 429 or 503
            fail(str(exc))
        for rejection in answer.get("rejected", []):
            errors = rejection.get("errors") or [{}]
            why = f"{errors[0].get('field', '')} {errors[0].get('message', '')}".strip()
            self.count(rejection.get("event_id"), rejection.get("index", 0), why)

    def close(self) -> None:
        self.client.close()


def _counting(stream: Iterator[dict[str, Any]], tick: Any) -> Iterator[dict[str, Any]]:
    for event in stream:
        tick()
        yield event


def _tee(
    stream: Iterator[dict[str, Any]], out: Path | None, sinks: list[Callable[[list[str]], None]]
) -> Iterator[dict[str, Any]]:
    """Pass events through, writing them to ``out`` and sending them to ``sinks`` (a batch of
    NDJSON lines at a time) on the way."""
    handle = out.open("w") if out is not None else None
    batch: list[str] = []
    try:
        for event in stream:
            line = json.dumps(event, separators=(",", ":"))
            if handle is not None:
                handle.write(line + "\n")
            if sinks:
                batch.append(line)
                if len(batch) >= BATCH:
                    for send in sinks:
                        send(batch)
                    batch = []
            yield event
        if batch:
            for send in sinks:
                send(batch)
    finally:
        if handle is not None:
            handle.close()


class _KafkaSink(_Rejections):
    """The kafka runtime's ingest in this process: each batch validated, then written to the
    events topic and the stages topic in one transaction, once the process group is not too
    far behind (``max_lag_events``), as ``serve ingest`` does for a ``POST /v1/events``. It
    routes events by the active rule pack (never activates one: ``rule_pack`` is ignored) and
    has a transactional id of its own, so it never fences a running ingest service."""

    name = "the kafka runtime's ingest"
    GIVE_UP_S = 300.0  # a batch the brokers or the backpressure refuse this long ends the run

    def __init__(self, settings: Settings) -> None:
        from ringfence.errors import RingfenceError
        from ringfence.runtimes.kafka.platform import KafkaPlatform

        try:
            self.platform = KafkaPlatform(
                msgspec.structs.replace(settings, rule_pack=None),  # (Settings.replace skips None)
                ingest=True,
                instance=f"simulate-{socket.gethostname()}-{os.getpid()}",
            )
        except RingfenceError as exc:  # no brokers or store configured, the store unreachable or behind
            fail(str(exc))
        except ImportError:
            fail("--kafka needs the kafka and postgres extras: pip install 'ringfence[kafka,postgres]'")
        except Exception as exc:  # the brokers unreachable (librdkafka's KafkaException)
            fail(f"cannot write to the kafka runtime's brokers: {exc}")
        self.platform.start()  # follows rule packs activated meanwhile
        super().__init__()  # in-process ingest logs none: the user is told at the end

    def send(self, lines: list[str]) -> None:
        from ringfence.errors import OverloadedError

        ingest = self.platform.ingest
        if ingest is None:  # made with ingest=True: never
            raise RuntimeError("the kafka platform was made without its ingest")
        body = "\n".join(lines).encode()
        deadline = time.monotonic() + self.GIVE_UP_S
        while True:
            try:
                result = asyncio.run(ingest.ingest(body, ndjson=True))
            except OverloadedError as exc:
                if time.monotonic() > deadline:
                    fail(f"the kafka runtime did not take a batch in {self.GIVE_UP_S:.0f} s: {exc}")
                time.sleep(max(1, exc.retry_after))
                continue
            for rejection in result.rejected:
                why = "; ".join(f"{e.field} {e.message}" for e in rejection.errors[:1])
                self.count(rejection.event_id, rejection.index, why)
            return

    def close(self) -> None:
        self.platform.stop()
