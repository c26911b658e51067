"""End to end: ``ringfence up`` on a fresh data dir, driven over HTTP from this process with
simulated bank traffic (default rule pack, full durability), sampled while it runs.

Reports events/s accepted and fully processed, ingest-to-alert latency percentiles (an
event's durable arrival to its alert being committed, i.e. queryable), processor lag, CPU
per event, the server's memory, engine state per tracked key, and how overload was met
(503 + Retry-After, not memory growth).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from ringfence.bench import procstat, state_size
from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.simulate import Traffic

SAMPLE_EVERY_S = 0.5


@dataclass
class Options:
    events: int = 100_000
    customers: int = 100_000
    batch: int = 500
    concurrency: int = 4
    rate: float | None = None  # events/s; None: as fast as the server accepts
    runs: int = 3
    measure_state: bool = True
    env: dict[str, str] = field(default_factory=dict)  # RINGFENCE_* settings of the server


def traffic(options: Options, seed: int) -> list[dict[str, Any]]:
    source = Traffic(seed=seed, customers=options.customers, fraud_rate=0.002, source_prefix=f"bench{seed}")
    return list(source.stream(start=time.time() - 2 * 3600, rate_per_s=2000.0, count=options.events))


def bodies(events: list[dict[str, Any]], batch: int) -> list[bytes]:
    lines = [json.dumps(e) for e in events]
    return ["\n".join(lines[i : i + batch]).encode() for i in range(0, len(lines), batch)]


@dataclass
class Load:
    accepted: int = 0
    overloaded: int = 0  # 503 answers (backpressure) that were retried


async def drive(server: EmbeddedServer, key: str, batches: list[bytes], options: Options, load: Load) -> None:
    """Post every batch, ``concurrency`` in flight, paced at ``rate`` if given."""
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in enumerate(batches):
        queue.put_nowait(item)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    started = time.perf_counter()
    interval = options.batch / options.rate if options.rate else 0.0

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            index, body = queue.get_nowait()
            if interval:
                await asyncio.sleep(max(0.0, started + index * interval - time.perf_counter()))
            while True:
                response = await client.post("/v1/events", content=body)
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
    """Every half second: time, accepted (client side), processed offset, lag, RSS, CPU."""

    def __init__(self, server: EmbeddedServer, key: str, load: Load) -> None:
        super().__init__(daemon=True)
        self.server, self.key, self.load = server, key, load
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()
        self.started = time.perf_counter()

    def run(self) -> None:
        with self.server.client(self.key) as client:
            while not self.stop.is_set():
                ready = client.get("/readyz").json()
                pids = procstat.tree(self.server.process.pid)
                self.samples.append(
                    {
                        "t": round(time.perf_counter() - self.started, 3),
                        "accepted": self.load.accepted,
                        "processed": ready["processed_offset"],
                        "lag": ready["lag_events"],
                        "rss_mib": round(procstat.rss_mib(pids), 1),
                        "cpu_s": round(procstat.cpu_seconds(pids), 2),
                    }
                )
                self.stop.wait(SAMPLE_EVERY_S)


def alert_latencies(server: EmbeddedServer, key: str, started_wall: float) -> list[tuple[float, float]]:
    """(seconds since the start, ingest-to-alert seconds) of every alert."""
    out: list[tuple[float, float]] = []
    cursor = None
    with server.client(key) as client:
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/alerts", params=params).json()
            for alert in page["items"]:
                created = datetime.fromisoformat(alert["created_at"]).timestamp()
                first = min(e["ingested_at"] for e in alert["evidence"]["events"])
                out.append((created - started_wall, created - datetime.fromisoformat(first).timestamp()))
            cursor = page["next_cursor"]
            if cursor is None:
                return sorted(out)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_run(options: Options, seed: int) -> dict[str, Any]:
    events = traffic(options, seed)
    batches = bodies(events, options.batch)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = create_key(data_dir, "bench", "admin")
        server = start_server(data_dir, env=options.env)
        try:
            pids = procstat.tree(server.process.pid)
            rss_start, cpu_start = procstat.rss_mib(pids), procstat.cpu_seconds(pids)
            load = Load()
            sampler = Sampler(server, key, load)
            started_wall, started = time.time(), time.perf_counter()
            sampler.start()
            asyncio.run(drive(server, key, batches, options, load))
            accept_s = time.perf_counter() - started
            server.wait_processed(key, timeout=3600)
            process_s = time.perf_counter() - started
            sampler.stop.set()
            sampler.join()
            pids = procstat.tree(server.process.pid)
            cpu = procstat.cpu_seconds(pids) - cpu_start
            rss_end = procstat.rss_mib(pids)
            with server.client(key) as client:
                feature_states = client.get("/metrics").text
            latencies = alert_latencies(server, key, started_wall)
        finally:
            server.stop()
    lat = [latency for _, latency in latencies]
    states = _metric(feature_states, "ringfence_engine_state_keys")
    return {
        "seed": seed,
        "events": len(events),
        "accepted_events_per_s": round(len(events) / accept_s),
        "processed_events_per_s": round(len(events) / process_s),
        "alerts": len(lat),
        "ingest_to_alert_s": {q: round(percentile(lat, v), 4) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
        "max_lag_events": max((s["lag"] for s in sampler.samples), default=0),
        "overload_503s": load.overloaded,
        "cpu_us_per_event": round(cpu * 1e6 / len(events), 1),
        "cpu_cores_used": round(cpu / process_s, 2),
        "rss_mib": {
            "start": round(rss_start, 1),
            "end": round(rss_end, 1),
            "max": max(s["rss_mib"] for s in sampler.samples),
        },
        "feature_states": int(states),
        "samples": sampler.samples,
        "latencies": [[round(t, 3), round(latency, 4)] for t, latency in latencies],
        "_events": events,
    }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run(options: Options) -> dict[str, Any]:
    """Every run, their medians and spread, and the engine's state size."""
    runs = [one_run(options, seed) for seed in range(1, options.runs + 1)]
    state = state_size.measure(runs[0]["_events"], time.time()) if options.measure_state else None
    for r in runs:
        del r["_events"]

    def spread(name: str, pick: Any = None) -> dict[str, float]:
        values = [pick(r) if pick else r[name] for r in runs]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "options": {k: v for k, v in vars(options).items() if k != "env"} | {"server_settings": options.env},
        "machine": machine(),
        "summary": {
            "accepted_events_per_s": spread("accepted_events_per_s"),
            "processed_events_per_s": spread("processed_events_per_s"),
            "p50_ingest_to_alert_s": spread("", lambda r: r["ingest_to_alert_s"]["p50"]),
            "p99_ingest_to_alert_s": spread("", lambda r: r["ingest_to_alert_s"]["p99"]),
            "cpu_us_per_event": spread("cpu_us_per_event"),
            "max_lag_events": spread("max_lag_events"),
            "rss_max_mib": spread("", lambda r: r["rss_mib"]["max"]),
        },
        "engine_state": state,
        "runs": runs,
    }


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
