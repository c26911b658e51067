"""End to end: ``ringfence up`` on a fresh data dir, driven over HTTP from this process with
simulated bank traffic (default rule pack, full durability), sampled while it runs.

Reports events/s accepted and fully processed, ingest-to-alert latency percentiles (an
event's arrival to the ``created_at`` of the alert it raised, a time the processor takes just
before its batch's snapshot part and commit), the share of rule hits queryable within
10-250 ms (to the end of that commit, from the server's histogram), processor lag, CPU per
event, the server's memory, engine state per tracked key, and how overload was met (503 +
Retry-After, not memory growth).

Two shapes of run. The short one sends its events and times the whole run, drain included.
A sustained one (``duration_s`` > 0) keeps the load on past a warm-up until its measured
window is at least ``duration_s`` long and holds ``min_events`` processed events, then
stops sending; every figure is taken over that window only, so start-up, the first state
write-behind and the final drain do not flatter or spoil it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
import platform
import statistics
import subprocess  # nosec B404
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from ringfence.bench import procstat, state_size
from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.simulate import Traffic

SAMPLE_EVERY_S = 0.5
# the server's ingest-to-alert histogram (to the commit that makes an alert queryable): these
# bounds are sampled, so the window's share of hits within each is known
QUERYABLE_BOUNDS = ("0.01", "0.025", "0.05", "0.1", "0.25", "+Inf")
QUERYABLE_BUCKET = "ringfence_ingest_to_alert_seconds_bucket"
RETRY_S = 0.5  # before sending again a request whose connection was dropped
MAX_DROPPED = 100  # dropped connections a run tolerates (each one counted in its figures)
SEED = 1  # every run replays the same traffic, so runs differ by the machine, not the events
FRAUD_RATE = 0.002
REFERENCE_EVENT_RATE = 9_700.0  # the reference bank's 35M events/hour, as event time in large runs


@dataclass
class Options:
    events: int = 100_000  # generated; a sustained run sends them until its window is complete
    customers: int = 100_000
    batch: int = 500
    concurrency: int = 4
    rate: float | None = None  # events/s; None: as fast as the server accepts
    runs: int = 3
    measure_state: bool = True
    env: dict[str, str] = field(default_factory=dict)  # RINGFENCE_* settings of the server
    event_rate: float = 2_000.0  # events per second of event time in the traffic
    warmup_s: float = 0.0  # sustained: left out of every figure
    duration_s: float = 0.0  # > 0: a sustained run, its window at least this long...
    min_events: int = 0  # ...and holding at least this many processed events
    traffic_dir: Path | None = None  # keep the generated traffic here for later invocations
    fraud_rate: float = FRAUD_RATE  # scenarios started an everyday event
    event_ids: str = "sequential"  # or "uuid": see EVENT_IDS


# How the traffic's events are named: the simulator's ids count up (``bench1-000000000001``), so
# the journal's index of (source, event_id) only ever appends; producers following the event
# contract's advice send random UUIDs, which land all over that index.
EVENT_IDS = ("sequential", "uuid")


def traffic_file(options: Options, directory: Path) -> Path:
    """The traffic as NDJSON, one event a line, generated once: the file is named by what
    shapes it, so an invocation with the same traffic reuses it."""
    if options.event_ids not in EVENT_IDS:
        raise ValueError(f"event ids {options.event_ids!r}: one of {', '.join(EVENT_IDS)}")
    fraud = "" if options.fraud_rate == FRAUD_RATE else f"-fraud{options.fraud_rate:g}"
    ids = "" if options.event_ids == "sequential" else f"-{options.event_ids}"
    name = f"traffic-seed{SEED}-{options.customers}c-{options.event_rate:g}eps-{options.events}{fraud}{ids}.ndjson"
    path = directory / name
    if path.exists():
        return path
    source = Traffic(
        seed=SEED, customers=options.customers, fraud_rate=options.fraud_rate, source_prefix=f"bench{SEED}"
    )
    start = traffic_start(options.events / options.event_rate)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        for event in source.stream(start=start, rate_per_s=options.event_rate, count=options.events):
            if options.event_ids == "uuid":
                event["event_id"] = uuid_of(event["event_id"])
            out.write(msgspec.json.encode(event) + b"\n")
    partial.replace(path)
    return path


def uuid_of(event_id: str) -> str:
    """A random-looking UUID (version 4's form) standing for ``event_id``: the same id gives the
    same UUID, so a retried event is still a duplicate, and the simulator's draws are untouched."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def traffic_start(span_s: float) -> float:
    """When simulated traffic lasting about ``span_s`` of event time starts: a UTC midnight, so
    the simulator's daily rhythm, and thus the events, are the same whatever the hour of the run;
    and ending at least an hour ago, so no event is in the future however long a file is kept."""
    return math.floor((time.time() - 3600 - 1.3 * span_s) / 86400) * 86400.0  # the rhythm varies it +-30 %


@contextmanager
def traffic(options: Options) -> Iterator[Path]:
    """The traffic file, in ``options.traffic_dir`` (kept) or a temporary folder (deleted after)."""
    if options.traffic_dir is not None:
        options.traffic_dir.mkdir(parents=True, exist_ok=True)
        yield traffic_file(options, options.traffic_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield traffic_file(options, Path(tmp))


def read_batches(path: Path, size: int) -> Iterator[bytes]:
    """NDJSON request bodies of ``size`` events each."""
    with path.open("rb") as lines:
        while chunk := list(itertools.islice(lines, size)):
            yield b"".join(chunk)


@dataclass
class Load:
    accepted: int = 0
    overloaded: int = 0  # 503 answers (backpressure) that were retried
    dropped: int = 0  # requests whose connection the server closed or refused, sent again
    enough: threading.Event = field(default_factory=threading.Event)  # a sustained window is complete


async def drive(server: EmbeddedServer, key: str, batches: Iterator[bytes], options: Options, load: Load) -> None:
    """Post the batches, ``concurrency`` in flight, paced at ``rate`` if given, until they run
    out or the sustained window is complete."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    started = time.perf_counter()
    interval = options.batch / options.rate if options.rate else 0.0
    numbered = enumerate(batches)  # shared by the workers: each takes the next batch

    async def worker(client: httpx.AsyncClient) -> None:
        for index, body in numbered:
            if load.enough.is_set():
                return
            if interval:
                await asyncio.sleep(max(0.0, started + index * interval - time.perf_counter()))
            while True:
                try:
                    response = await client.post("/v1/events", content=body)
                except httpx.TransportError:  # as a producer does: send it again (a duplicate if it was kept)
                    if server.process.poll() is not None or load.dropped >= MAX_DROPPED:
                        raise
                    load.dropped += 1
                    await asyncio.sleep(RETRY_S)
                    continue
                if response.status_code in (429, 503):
                    load.overloaded += 1
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                if response.status_code != 202:
                    raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:500]}")
                load.accepted += response.json()["accepted"]
                break

    limits = httpx.Limits(max_connections=options.concurrency)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(options.concurrency)))


class Sampler(threading.Thread):
    """Every half second: time, accepted (client side), processed offset, lag, RSS, CPU, the
    hits queryable so far within each of :data:`QUERYABLE_BOUNDS`, and how long ``/readyz``
    took to answer (a stalled server shows there); in a sustained run, it also says when the
    window is complete. A probe the server drops is counted and skipped."""

    def __init__(self, server: EmbeddedServer, key: str, load: Load, options: Options, started: float) -> None:
        super().__init__(daemon=True)
        self.server, self.key, self.load, self.options, self.started = server, key, load, options, started
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()
        self.window: tuple[int, int] | None = None  # sample indexes, once complete
        self.dropped = 0

    def run(self) -> None:
        with self.server.client(self.key) as client:
            while not self.stop.is_set():
                self.sample(client)
                if self.options.duration_s and self.window is None:
                    self._check_window()
                self.stop.wait(SAMPLE_EVERY_S)

    def sample(self, client: httpx.Client) -> None:
        asked = time.perf_counter()
        try:
            ready = client.get("/readyz").json()
            answered = time.perf_counter()
            exposition = client.get("/metrics")
            exposition.raise_for_status()
            queryable = queryable_buckets(exposition.text)
        except httpx.TransportError:
            if self.server.process.poll() is not None or self.dropped >= MAX_DROPPED:
                raise
            self.dropped += 1
            return
        pids = procstat.tree(self.server.process.pid)
        self.samples.append(
            {
                "t": round(answered - self.started, 3),
                "readyz_s": round(answered - asked, 3),
                "accepted": self.load.accepted,
                "processed": ready["processed_offset"],
                "lag": ready["lag_events"],
                "rss_mib": round(procstat.rss_mib(pids), 1),
                "cpu_s": round(procstat.cpu_seconds(pids), 2),
                **queryable,
            }
        )

    def _check_window(self) -> None:
        first = self.warm()
        if first is None:
            return
        last = len(self.samples) - 1
        start, end = self.samples[first], self.samples[last]
        if end["t"] - start["t"] >= self.options.duration_s and end["processed"] - start["processed"] >= max(
            1, self.options.min_events
        ):
            self.window = (first, last)
            self.load.enough.set()

    def warm(self) -> int | None:
        """The first sample after the warm-up."""
        return next((i for i, s in enumerate(self.samples) if s["t"] >= self.options.warmup_s), None)


def trigger_ingested_at(alert: dict[str, Any]) -> float | None:
    """When the event whose arrival raised ``alert`` was ingested (epoch seconds).

    That is the alert's first hit's own event (evidence lists each hit's earlier pattern steps
    and then its own event, which alone carries ``features``). None for an alert a timer
    raised (an absence: its first hit's time is the deadline, not its event's) and when the
    first hit's event has left the capped evidence."""
    own = [e for e in alert["evidence"]["events"] if "features" in e]
    if len(own) != alert["count"] or own[0]["occurred_at"] != alert["first_seen"]:
        return None
    return datetime.fromisoformat(own[0]["ingested_at"]).timestamp()


def alert_latencies(alerts: list[dict[str, Any]], started_wall: float) -> list[tuple[float, float]]:
    """(seconds since the start that its event arrived, ingest-to-alert seconds) of every alert
    an arriving event raised, in order of arrival."""
    out = []
    for alert in alerts:
        ingested = trigger_ingested_at(alert)
        if ingested is not None:
            created = datetime.fromisoformat(alert["created_at"]).timestamp()
            out.append((ingested - started_wall, created - ingested))
    return sorted(out)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p99.9", 0.999))


def one_run(options: Options, path: Path) -> dict[str, Any]:
    """One run on a fresh data dir: load it, sample it, let it drain; the figures of its window."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = create_key(data_dir, "bench", "admin")
        server = start_server(data_dir, env=options.env)
        try:
            load = Load()
            started_wall, started = time.time(), time.perf_counter()
            sampler = Sampler(server, key, load, options, started)
            with server.client(key) as client:  # the start, before any load: a quick run's window
                sampler.sample(client)  # holds all of it even when the sampler's thread starts late
            sampler.start()
            asyncio.run(drive(server, key, read_batches(path, options.batch), options, load))
            sent_s = time.perf_counter() - started
            server.wait_processed(key, timeout=3600)
            process_s = time.perf_counter() - started
            sampler.stop.set()
            sampler.join()
            with server.client(key) as client:
                sampler.sample(client)  # the end: everything processed
                feature_states = metric(client.get("/metrics").text, "ringfence_engine_state_keys")
            alerts = list(server.alerts(key))
        except httpx.HTTPError as exc:
            try:  # a server that went away: say how, with its log
                code: int | str = server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = "still running"
            raise RuntimeError(f"the server failed ({code}): {server.log_tail()}") from exc
        finally:
            server.stop()
    samples = sampler.samples
    if options.duration_s:
        first = sampler.warm()
        last = sampler.window[1] if sampler.window else max(i for i, s in enumerate(samples) if s["t"] <= sent_s)
        if first is None or last <= first:
            raise RuntimeError(f"the traffic ran out during the warm-up ({sent_s:.0f} s): generate more (--events)")
        start, end = samples[first], samples[last]
        span = end["t"] - start["t"]
        processed_rate = (end["processed"] - start["processed"]) / span
        accepted_rate = (end["accepted"] - start["accepted"]) / span
    else:
        first, last = 0, len(samples) - 1
        start, end = samples[first], samples[last]
        processed_rate, accepted_rate = load.accepted / process_s, load.accepted / sent_s
    window = samples[first : last + 1]
    latencies = alert_latencies(alerts, started_wall)
    lat = [latency for at, latency in latencies if start["t"] <= at <= end["t"]]
    run = {
        "events": load.accepted,
        "accepted_events_per_s": round(accepted_rate),
        "processed_events_per_s": round(processed_rate),
        "alerts": len(alerts),
        "alerts_timed": len(lat),
        "ingest_to_alert_s": {name: round(percentile(lat, q), 4) for name, q in QUANTILES},
        # created_at is taken before the batch's snapshot part and commit; the server's
        # histogram runs to the commit's end: the share of hits queryable within each bound
        "queryable_within_s": queryable_within(start, end),
        "max_lag_events": max(s["lag"] for s in window),
        "overload_503s": load.overloaded,
        "dropped_connections": {"requests": load.dropped, "probes": sampler.dropped},
        "max_readyz_s": max(s["readyz_s"] for s in window),
        "cpu_us_per_event": round(
            (end["cpu_s"] - start["cpu_s"]) * 1e6 / max(1, end["processed"] - start["processed"]), 1
        ),
        "cpu_cores_used": round((end["cpu_s"] - start["cpu_s"]) / max(1e-9, end["t"] - start["t"]), 2),
        "rss_mib": {
            "start": samples[0]["rss_mib"],
            "end": samples[-1]["rss_mib"],
            "max": max(s["rss_mib"] for s in window),
        },
        "feature_states": int(feature_states),
        "samples": samples,
        "latencies": [[round(t, 3), round(latency, 4)] for t, latency in latencies],
    }
    if options.duration_s:
        run["window_s"] = [start["t"], end["t"]]
        run["steady_state"] = {
            "warmup_s": start["t"],
            "window_s": round(end["t"] - start["t"], 1),
            "events_processed": end["processed"] - start["processed"],
            # False: the traffic ran out first (generate more with --events)
            "complete": sampler.window is not None,
        }
    return run


def queryable_buckets(text: str) -> dict[str, float]:
    """The server's hits so far whose alert was queryable within each of :data:`QUERYABLE_BOUNDS`,
    as a sample's figures (``queryable_le_<bound>``)."""
    wanted = {f'{QUERYABLE_BUCKET}{{le="{bound}"}}': f"queryable_le_{bound}" for bound in QUERYABLE_BOUNDS}
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    if len(found) < len(wanted):
        missing = sorted(set(QUERYABLE_BOUNDS) - {name.removeprefix("queryable_le_") for name in found})
        raise RuntimeError(f"the server's /metrics has no {QUERYABLE_BUCKET} for le={missing}")
    return found


def queryable_within(start: dict[str, float], end: dict[str, float]) -> dict[str, float | None]:
    """The share of a window's hits (between samples ``start`` and ``end``, by when they were
    committed) queryable within each bound (None: no hits), and how many hits there were."""

    def hits_within(bound: str) -> float:
        return end[f"queryable_le_{bound}"] - start[f"queryable_le_{bound}"]

    hits = hits_within("+Inf")
    shares: dict[str, float | None] = {
        bound: round(hits_within(bound) / hits, 4) if hits else None for bound in QUERYABLE_BOUNDS
    }
    return shares | {"hits": hits}


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run(options: Options) -> dict[str, Any]:
    """Every run, their medians and spread, and the engine's state size."""
    with traffic(options) as path:
        used = {"file": path.name, "sha256": file_digest(path)}
        runs = [one_run(options, path) for _ in range(options.runs)]
        state = None
        if options.measure_state:
            with path.open("rb") as lines:
                state = state_size.measure(lines, time.time())

    def spread(pick: Any) -> dict[str, float | None]:
        values = [v for v in (pick(r) for r in runs) if v is not None]  # None: a run had nothing to measure
        if not values:
            return dict.fromkeys(("median", "min", "max"))
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    summary: dict[str, Any] = {
        "accepted_events_per_s": spread(lambda r: r["accepted_events_per_s"]),
        "processed_events_per_s": spread(lambda r: r["processed_events_per_s"]),
        **{
            f"{name}_ingest_to_alert_s": spread(lambda r, name=name: r["ingest_to_alert_s"][name])
            for name in ("p50", "p99", "p99.9")
        },
        "queryable_within_50ms_share": spread(lambda r: r["queryable_within_s"]["0.05"]),
        "cpu_us_per_event": spread(lambda r: r["cpu_us_per_event"]),
        "max_lag_events": spread(lambda r: r["max_lag_events"]),
        "rss_max_mib": spread(lambda r: r["rss_mib"]["max"]),
    }
    if options.duration_s:
        summary["steady_state_complete"] = all(r["steady_state"]["complete"] for r in runs)
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items() if k != "env"}
        | {"server_settings": options.env},
        "machine": machine(),
        "traffic": used,
        "summary": summary,
        "engine_state": state,
        "runs": runs,
    }


def file_digest(path: Path) -> str:
    """A traffic file's SHA-256: a file kept in ``--traffic-dir`` is named by its options, not by
    the simulator that wrote it, so two results compare only if their digests are equal."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown",
    )
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(), "system": platform.platform()}
