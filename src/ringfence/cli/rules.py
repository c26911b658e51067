"""``ringfence rules check|test|backtest``: check a rule pack, see which detections fire on which
events, and compare a candidate pack with the live one over a running platform's stored events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from ringfence.cli.common import ConfigOption, fail, settings_from
from ringfence.clock import SystemClock, iso
from ringfence.engine.engine import Engine
from ringfence.engine.pack import RulePack, load_pack_file
from ringfence.errors import ConfigError, EventError, RulePackError
from ringfence.events.decode import validate_event
from ringfence.events.fx import shipped_table
from ringfence.private_files import input_lines

app = typer.Typer(help="Check, test and back-test rule packs.", no_args_is_help=True)
PackFile = Annotated[Path, typer.Argument(help="Rule pack YAML", exists=True, dir_okay=False)]

MAX_LINE_BYTES = 1024 * 1024  # far past any event: a file of one endless line is refused, not held


def _load(file: Path) -> RulePack:
    try:
        return load_pack_file(file)
    except RulePackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def check(file: PackFile) -> None:
    """Load FILE as the server would; exit 1 naming the rule and position of any error."""
    pack = _load(file)
    typer.echo(
        f"OK: pack {pack.version} ({pack.digest}): {len(pack.rules)} rules, {len(pack.patterns)} patterns, "
        f"{len(pack.features)} features, {len(pack.anomalies)} anomaly scores, {len(pack.lists)} lists"
    )


@app.command()
def test(
    file: PackFile,
    events: Annotated[Path, typer.Option("--events", help="NDJSON events", exists=True, dir_okay=False)],
    flush: Annotated[bool, typer.Option(help="At the end, fire every pending absence timer")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per hit")] = False,
    fx_rates: Annotated[
        Path | None,
        typer.Option(help="FX rates CSV (currency,rate,as_of) to convert amounts with (default: none)", dir_okay=False),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run EVENTS through FILE's pack and show which detections fire on which events, and why."""
    pack = _load(file)
    engine = Engine(pack)
    now = SystemClock().time()
    settings = settings_from(config)  # the reference currency and the age a rate goes stale
    try:
        fx = shipped_table(fx_rates, settings.reference_currency, settings.fx_max_age_days, now)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    hits: list[dict[str, Any]] = []
    invalid = 0
    for line_no, line in enumerate(input_lines(events, MAX_LINE_BYTES), 1):
        if not line.strip():
            continue
        try:
            event = validate_event(line, now, pack.custom_types, fx=fx)
        except EventError as exc:
            invalid += 1
            typer.echo(f"line {line_no}: invalid event: {exc}", err=True)
            continue
        signals = engine.process(event, line_no, 0, now)
        hits += [{"line": line_no, **_hit(s)} for s in signals]
    hits += [{"line": None, **_hit(s)} for s in engine.advance(float("inf") if flush else None)]
    if as_json:
        for hit in hits:
            typer.echo(json.dumps(hit))
        return
    table = Table("line", "event", "detection", "mode", "title", "why")
    for hit in hits:
        why = ", ".join(f"{k}={v}" for k, v in hit["features"].items()) or "-"
        table.add_row(str(hit["line"] or "timer"), hit["event_id"], hit["rule_id"], hit["mode"], hit["title"], why)
    console = Console(width=200)
    console.print(table)
    console.print(f"{len(hits)} hits; {invalid} invalid events skipped")


def _hit(signal: Any) -> dict[str, Any]:
    return {
        "event_id": signal.event_id,
        "rule_id": signal.rule_id,
        "mode": signal.mode,
        "title": signal.title,
        "occurred_at": iso(signal.occurred_at),
        "features": signal.features,
        "related": [e["event_id"] for e in signal.related_events],
    }


BACKTEST_TIMEOUT_S = 30.0  # between two lines of the server's answer: it sends progress every half second


@app.command()
def backtest(
    file: PackFile,
    url: Annotated[str, typer.Option(help="The running platform's API")] = "http://127.0.0.1:8080",
    key: Annotated[
        str | None,
        typer.Option(help="API key with rules:read and alerts:read, of every audience", envvar="RINGFENCE_API_KEY"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="Replay the newest LIMIT stored events")] = 100_000,
    as_json: Annotated[bool, typer.Option("--json", help="The server's result as one JSON object")] = False,
) -> None:
    """Replay the newest stored events of the platform at URL through its live pack and FILE, and
    show each detection's hits under both (``POST /v1/rules/backtest``, within the platform's
    time budget: a run cut short says so). Exit 1 if FILE is refused, 2 if the run cannot be had."""
    _load(file)  # its errors here, naming the rule, before anything is sent
    if not key:
        fail("--key (or RINGFENCE_API_KEY) is needed: a key with rules:read and alerts:read")
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/yaml",
        "Accept": "application/x-ndjson",
    }
    result: dict[str, Any] | None = None
    progress = Progress(TextColumn("back-test"), BarColumn(), MofNCompleteColumn(), transient=True)
    try:
        with (
            httpx.Client(base_url=url, timeout=BACKTEST_TIMEOUT_S) as client,
            client.stream(
                "POST", "/v1/rules/backtest", params={"limit": limit}, content=file.read_bytes(), headers=headers
            ) as answer,
            progress,
        ):
            if answer.status_code != 200:
                answer.read()
                code = 1 if answer.status_code in (400, 422) else 2
                fail(f"the platform answered {answer.status_code}: {_error_of(answer)}", code)
            task = progress.add_task("back-test", total=None)
            for line in answer.iter_lines():
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:  # not the platform's (a proxy's page, say)
                    fail(f"the answer from {url} is not a back-test's: {line[:200]!r}")
                if "progress" in message:
                    step = message["progress"]
                    progress.update(task, completed=step["events"], total=step["of"])
                elif "error" in message:
                    fail(f"the back-test failed: {message['error'].get('message', message['error'])}")
                elif "result" in message:
                    result = message["result"]
    except httpx.HTTPError as exc:
        fail(f"cannot run the back-test at {url}: {exc}")
    if result is None:
        fail("the platform ended the back-test without a result")
    if as_json:
        typer.echo(json.dumps(result))
        return
    _show_backtest(result)


def _error_of(answer: httpx.Response) -> str:
    try:
        error = answer.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return answer.text[:300]


def _show_backtest(result: dict[str, Any]) -> None:
    table = Table(
        "detection", f"live ({result['live_version']})", f"candidate ({result['candidate_version']})", "change"
    )
    for detection, hits in result["hits"].items():
        change = hits["candidate"] - hits["live"]
        table.add_row(detection, str(hits["live"]), str(hits["candidate"]), f"{change:+d}" if change else "")
    console = Console(width=200)
    console.print(table)
    cut = " (cut short by the platform's time budget: the hits so far)" if result["truncated"] else ""
    skipped = result.get("duplicate_events", 0)  # a server before 2026-12-06 does not say
    retries = f", {skipped:,} producers' retries skipped as the workers skip them" if skipped else ""
    console.print(
        f"{result['events']:,} of {result['of']:,} events in {result['elapsed_s']} s; "
        f"{result['failed_events']} failed{retries}{cut}"
    )
