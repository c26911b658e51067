"""End-to-end benchmark of the embedded platform, driven over HTTP as a producer would.

Starts ``ringfence up`` on a fresh data dir, posts simulated bank traffic (default rule
pack on) from this separate process, and reports accepted and processed events/s,
ingest-to-alert latency percentiles, and the server's memory.

    .venv/bin/python benchmarks/e2e.py --events 200000 --customers 100000 --runs 3
    .venv/bin/python benchmarks/e2e.py --rate 9700 --events 100000   # paced at the reference load
    .venv/bin/python benchmarks/e2e.py --quick                       # seconds; what CI runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from ringfence.simulate import Traffic
from ringfence.testing import EmbeddedServer, create_key, start_server


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def make_batches(events: int, customers: int, batch: int, seed: int) -> list[bytes]:
    traffic = Traffic(seed=seed, customers=customers, fraud_rate=0.002, source_prefix=f"bench{seed}")
    stream = traffic.stream(start=time.time() - 2 * 3600, rate_per_s=2000.0, count=events)
    lines = [json.dumps(e) for e in stream]
    return ["\n".join(lines[i : i + batch]).encode() for i in range(0, len(lines), batch)]


async def drive(
    server: EmbeddedServer, key: str, batches: list[bytes], concurrency: int, rate: float | None, batch: int
) -> float:
    """Post every batch; return the seconds until the last 202."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    started = time.perf_counter()
    interval = batch / rate if rate else 0.0
    sent = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while not queue.empty():
            body = queue.get_nowait()
            if interval:
                due = started + sent * interval
                sent += 1
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            while True:
                response = await client.post("/v1/events", content=body)
                if response.status_code in (429, 503):
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                assert response.status_code == 202, response.text
                break

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - started


def latencies(server: EmbeddedServer, key: str) -> list[float]:
    """Ingest-to-alert of every alert: its creation (commit) minus its first event's arrival."""
    out: list[float] = []
    cursor = None
    with server.client(key) as c:
        while True:
            page = c.get("/v1/alerts", params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
            for alert in page["items"]:
                created = datetime.fromisoformat(alert["created_at"]).timestamp()
                ingested = datetime.fromisoformat(alert["evidence"]["events"][0]["ingested_at"]).timestamp()
                out.append(created - ingested)
            cursor = page["next_cursor"]
            if cursor is None:
                return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_run(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    batches = make_batches(args.events, args.customers, args.batch, seed)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = create_key(data_dir, "bench", "admin")
        server = start_server(data_dir)
        try:
            rss_start = rss_kib(server.process.pid)
            started = time.perf_counter()
            accept_s = asyncio.run(drive(server, key, batches, args.concurrency, args.rate, args.batch))
            server.wait_processed(key, timeout=3600)
            process_s = time.perf_counter() - started
            with server.client(key) as c:
                metrics = c.get("/metrics").text
            lat = latencies(server, key)
            rss_end = rss_kib(server.process.pid)
        finally:
            server.stop()
    keys = metric(metrics, "ringfence_engine_state_keys")
    return {
        "events": args.events,
        "accepted_events_per_s": round(args.events / accept_s),
        "processed_events_per_s": round(args.events / process_s),
        "alerts": len(lat),
        "ingest_to_alert_s": {
            "p50": round(pct(lat, 0.5), 4),
            "p95": round(pct(lat, 0.95), 4),
            "p99": round(pct(lat, 0.99), 4),
        },
        "rss_mib": {"start": round(rss_start / 1024, 1), "end": round(rss_end / 1024, 1)},
        "feature_states": int(keys),
        "rss_bytes_per_feature_state": round((rss_end - rss_start) * 1024 / keys) if keys else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--rate", type=float, default=None, help="pace the load at this many events/s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few seconds; checks that every figure is reported")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.events, args.customers, args.runs = 3_000, 1_000, 1
    runs = [one_run(args, seed) for seed in range(1, args.runs + 1)]
    summary = {
        "command": "benchmarks/e2e.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v not in (None, False) and k not in ("out", "quick")),
        "runs": runs,
        "median": {
            "accepted_events_per_s": statistics.median(r["accepted_events_per_s"] for r in runs),
            "processed_events_per_s": statistics.median(r["processed_events_per_s"] for r in runs),
            "p99_ingest_to_alert_s": statistics.median(r["ingest_to_alert_s"]["p99"] for r in runs),
        },
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
