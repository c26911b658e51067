"""``ringfence replay FILE.ndjson``: send a file of events through the pipeline.

With ``--url`` the file is posted to a running server; without, an embedded platform
is run on the data dir until every event is processed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ringfence.alerts.notify.base import retry_after_s
from ringfence.cli.common import ConfigOption, DataDirOption, fail, settings_from
from ringfence.errors import FieldError, RingfenceError
from ringfence.events.decode import Rejection
from ringfence.private_files import input_lines
from ringfence.runtimes.embedded.platform import Platform
from ringfence.runtimes.ingest import IngestResult

BATCH_LINES = 1_000
SHOWN_REJECTIONS = 20
MAX_LINE_BYTES = 1024 * 1024  # far past any event: a file of one endless line is refused, not held


def _batches(path: Path) -> Iterator[tuple[bytes, int]]:
    """Chunks of up to BATCH_LINES lines, with their size in bytes."""
    lines: list[bytes] = []
    size = 0
    for line in input_lines(path, MAX_LINE_BYTES):
        if line.strip():
            lines.append(line)
            size += len(line)
        if len(lines) >= BATCH_LINES:
            yield b"".join(lines), size
            lines, size = [], 0
    if lines:
        yield b"".join(lines), size


@dataclass
class Totals:
    """What a replay's bodies came to, their rejections numbered by line of the file."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


def replay(
    file: Annotated[Path, typer.Argument(help="NDJSON file, one event per line", exists=True, dir_okay=False)],
    url: Annotated[str | None, typer.Option(help="Post to this running server instead of the data dir")] = None,
    key: Annotated[str | None, typer.Option(help="API key for --url", envvar="RINGFENCE_API_KEY")] = None,
    allow_rejects: Annotated[
        bool, typer.Option("--allow-rejects", help="Exit 0 even if some lines were rejected")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Send FILE through ingest and report what was accepted, duplicate or rejected.

    Exits 1 if any line was rejected (unless --allow-rejects), so a script notices.
    """
    total = Totals()
    progress = Progress(
        TextColumn("replay"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} bytes"),
        TimeRemainingColumn(),
        transient=False,
    )
    with progress:
        task = progress.add_task("replay", total=os.path.getsize(file))
        if url is not None:
            if not key:
                fail("--url needs an API key with events:write (--key or RINGFENCE_API_KEY)")
            _replay_http(file, url, key or "", total, lambda n: progress.advance(task, n))
        else:
            settings = settings_from(config, data_dir=data_dir)
            try:
                asyncio.run(_replay_embedded(file, Platform(settings), total, lambda n: progress.advance(task, n)))
            except RingfenceError as exc:
                fail(str(exc))
    typer.echo(f"accepted {total.accepted}, duplicates {total.duplicates}, rejected {len(total.rejected)}")
    for line in _rejection_lines(total.rejected):
        typer.echo(line)
    if total.rejected and not allow_rejects:
        raise typer.Exit(1)


def _rejection_lines(rejected: Sequence[Rejection]) -> Iterator[str]:
    """The first SHOWN_REJECTIONS rejections, one line each, then how many were not shown."""
    for r in rejected[:SHOWN_REJECTIONS]:
        event = f" ({r.event_id})" if r.event_id else ""  # no id when the line had none (or it was refused)
        yield f"  rejected line {r.index + 1}{event}: " + "; ".join(f"{e.field}: {e.message}" for e in r.errors)
    if len(rejected) > SHOWN_REJECTIONS:
        yield f"  ... and {len(rejected) - SHOWN_REJECTIONS} more rejected lines not shown"


def _merge(total: Totals, part: IngestResult, offset: int) -> None:
    total.accepted += part.accepted
    total.duplicates += part.duplicates
    for r in part.rejected:
        total.rejected.append(type(r)(r.index + offset, r.event_id, r.errors))


MAX_BACKPRESSURE_S = 600.0  # how long one batch waits on 429/503 answers before the replay gives up


def _parse_result(data: dict[str, Any]) -> IngestResult:
    rejected = [
        Rejection(r["index"], r["event_id"], [FieldError(e["field"], e["message"]) for e in r["errors"]])
        for r in data["rejected"]
    ]
    return IngestResult(accepted=data["accepted"], duplicates=data["duplicates"], rejected=rejected)


def _replay_http(file: Path, url: str, key: str, total: Totals, advance: Callable[[int], None]) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    line = 0
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for body, size in _batches(file):
            response = client.post("/v1/events", content=body)
            waited = 0.0
            while response.status_code in (429, 503):  # backpressure: wait as told, then resend
                if waited >= MAX_BACKPRESSURE_S:
                    fail(f"the server answered {response.status_code} for {waited:.0f} s: try again later", 1)
                pause = min(retry_after_s(response.headers.get("retry-after"), time.time()) or 1.0, 60.0)
                time.sleep(pause)
                waited += pause
                response = client.post("/v1/events", content=body)
            try:
                payload = response.json()
                if response.status_code == 202:
                    _merge(total, _parse_result(payload), line)
                elif response.status_code == 400 and payload["error"]["code"] == "invalid_events":
                    _merge(total, _parse_result(payload["error"]["details"]), line)
                else:
                    fail(f"server answered {response.status_code}: {payload['error']['message']}")
            except (ValueError, KeyError, TypeError, AttributeError):  # a proxy's page, or no Ringfence at all
                fail(f"server answered {response.status_code} with no answer of Ringfence's: is {url} its API?", 1)
            line += body.count(b"\n")
            advance(size)


async def _replay_embedded(file: Path, platform: Platform, total: Totals, advance: Callable[[int], None]) -> None:
    platform.start()
    try:
        assert platform.ingest is not None
        line = 0
        for body, size in _batches(file):
            while True:
                try:
                    part = await platform.ingest.ingest(body, ndjson=True)
                    break
                except RingfenceError as exc:
                    if getattr(exc, "retry_after", None) is None:
                        raise
                    await asyncio.sleep(0.2)
            _merge(total, part, line)
            line += body.count(b"\n")
            advance(size)
        while platform.lag() > 0:
            await asyncio.sleep(0.05)
    finally:
        platform.stop()
