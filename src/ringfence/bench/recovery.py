"""Recovery after ``kill -9`` with a bank's worth of state: how long until the platform serves
and processes again, and proof that nothing acknowledged was lost and no alert doubled.

One server is loaded with simulated traffic from ``customers`` customers (flat out, then
processed to the end), and then, ``kills`` times, killed with SIGKILL in the middle of a
request while a sequential producer streams the tail of the traffic, and restarted on the
same data dir. From each restart (the process spawned) it times:

- ``serving_s``: until ``/healthz`` answers;
- ``ready_s``: until ``/readyz`` answers 200 (state loaded, processor running);
- ``processing_s``: until the batch the kill cut off, sent again, has been processed.

The producer is at-least-once: after each restart it resends its last acknowledged batch
(every event of it must come back a duplicate: it was kept) and the one cut off. At the end,
the log must hold each event exactly once, and the alerts (id, rule, count) and a sample of
customers' features must equal those of a clean run of the same traffic on a fresh server.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ringfence.bench import e2e
from ringfence.bench.servers import EmbeddedServer, create_key, post_events, start_server
from ringfence.bench.state_size import customers_of

BATCHES_PER_KILL = 4  # tail batches streamed around each kill
KILL_AFTER = 2  # acknowledged batches of each stretch before the kill
SAMPLE_CUSTOMERS = 40
RESTART_DEADLINE_S = 600.0


@dataclass
class Options:
    customers: int = 1_000_000
    events: int = 2_000_000  # the load before the first kill
    batch: int = 2_000
    kills: int = 3
    env: dict[str, str] = field(default_factory=dict)  # RINGFENCE_* settings of the server
    traffic_dir: Path | None = None


@dataclass
class Outcome:
    """What a server ended with: its alerts (id: rule, count), sample features, log head."""

    alerts: dict[str, tuple[str, int]]
    features: dict[str, Any]
    log_head: int


def _traffic_options(options: Options) -> e2e.Options:
    tail = options.kills * BATCHES_PER_KILL + 1
    return e2e.Options(
        events=options.events + tail * options.batch,
        customers=options.customers,
        batch=options.batch,
        concurrency=1,  # one request at a time: the log's order is the traffic's in both runs
        event_rate=e2e.REFERENCE_EVENT_RATE,
        traffic_dir=options.traffic_dir,
    )


def load(server: EmbeddedServer, key: str, batches: Iterator[bytes], options: e2e.Options) -> None:
    """Post ``batches`` flat out and wait until all of them are processed."""
    asyncio.run(e2e.drive(server, key, batches, options, e2e.Load()))
    server.wait_processed(key, timeout=7200)


def outcome(server: EmbeddedServer, key: str, customers: list[str]) -> Outcome:
    alerts: dict[str, tuple[str, int]] = {}
    for alert in server.alerts(key):
        if alert["id"] in alerts:
            raise AssertionError(f"alert {alert['id']} listed twice")
        alerts[alert["id"]] = (alert["rule_id"], alert["count"])
    with server.client(key) as c:
        features = {cus: c.get(f"/v1/customers/{cus}/features").json()["features"] for cus in customers}
        head = c.get("/readyz").json()["log_head"]
    return Outcome(alerts, features, head)


def sample_customers(tail: list[bytes]) -> list[str]:
    """Customers of the tail (their features change around the kills)."""
    return sorted(customers_of(line for body in tail for line in body.splitlines()))[:SAMPLE_CUSTOMERS]


def clean_run(path: Path, options: e2e.Options, env: dict[str, str], first: int, customers: list[str]) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = create_key(data_dir, "bench", "admin")
        server = start_server(data_dir, env=env)
        try:
            batches = e2e.read_batches(path, options.batch)
            load(server, key, itertools.islice(batches, first), options)
            with server.client(key) as client:
                for body in batches:
                    post_events(client, body)
            server.wait_processed(key, timeout=600)
            return outcome(server, key, customers)
        finally:
            server.stop()


def restart(
    data_dir: Path, key: str, env: dict[str, str], resend: bytes, cut: bytes
) -> tuple[EmbeddedServer, dict[str, Any]]:
    """Start the server again; time it to serving, ready and processing; resend the last
    acknowledged batch (it must be all duplicates) and the one the kill cut off."""
    spawned = time.perf_counter()
    server = start_server(data_dir, env=env)
    times = {"serving_s": time.perf_counter() - spawned}
    with server.client(key) as client:
        _wait(lambda: client.get("/readyz").status_code == 200, "ready")
        times["ready_s"] = time.perf_counter() - spawned
        again = post_events(client, resend)
        post_events(client, cut)
        head = client.get("/readyz").json()["log_head"]
        _wait(lambda: client.get("/readyz").json()["processed_offset"] >= head, "processing")
        times["processing_s"] = time.perf_counter() - spawned
        state = e2e.metric(client.get("/metrics").text, "ringfence_engine_state_keys")
    kept = again["duplicates"] == resend.count(b"\n")  # each acknowledged event was still there
    return server, {k: round(v, 2) for k, v in times.items()} | {"feature_states": int(state), "acked_kept": kept}


def _wait(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + RESTART_DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} {RESTART_DEADLINE_S:g} s after the restart")
        time.sleep(0.02)


def stream_and_kill(server: EmbeddedServer, key: str, batches: list[bytes]) -> int:
    """Post ``batches`` one by one; kill the server inside the request after the
    ``KILL_AFTER``-th acknowledgement; return the index of the batch that was cut off."""
    acked = threading.Event()

    def killer() -> None:
        acked.wait()
        time.sleep(0.005)  # land inside the next request (and, likely, a processor batch)
        server.kill()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with server.client(key) as client:
        for index, body in enumerate(batches):
            try:
                post_events(client, body)
            except httpx.HTTPError:
                if not acked.is_set():
                    raise  # not the kill's doing
                thread.join()
                return index
            if index + 1 == KILL_AFTER:
                acked.set()
    raise AssertionError("the server outlived its kill")


def run(options: Options) -> dict[str, Any]:
    traffic = _traffic_options(options)
    first = options.events // options.batch  # batches of the load
    with e2e.traffic(traffic) as path:
        tail = list(itertools.islice(e2e.read_batches(path, options.batch), first, None))
        customers = sample_customers(tail)
        expected = clean_run(path, traffic, options.env, first, customers)
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            key = create_key(data_dir, "bench", "admin")
            server = start_server(data_dir, env=options.env)
            restarts = []
            try:
                load(server, key, itertools.islice(e2e.read_batches(path, options.batch), first), traffic)
                with path.open("rb") as lines:
                    loaded_customers = len(customers_of(itertools.islice(lines, first * options.batch)))
                with server.client(key) as client:
                    loaded = e2e.metric(client.get("/metrics").text, "ringfence_engine_state_keys")
                for kill in range(options.kills):
                    stretch = tail[kill * BATCHES_PER_KILL : (kill + 1) * BATCHES_PER_KILL]
                    cut = stream_and_kill(server, key, stretch)
                    server, times = restart(data_dir, key, options.env, stretch[cut - 1], stretch[cut])
                    restarts.append(times)
                    with server.client(key) as client:
                        for body in stretch[cut + 1 :]:
                            post_events(client, body)
                with server.client(key) as client:
                    for body in tail[options.kills * BATCHES_PER_KILL :]:
                        post_events(client, body)
                server.wait_processed(key, timeout=600)
                got = outcome(server, key, customers)
            finally:
                server.stop()
    distinct = traffic.events
    checks = {
        "acknowledged_events_kept": all(r["acked_kept"] for r in restarts),
        "log_holds_each_event_once": got.log_head == distinct == expected.log_head,
        "alerts_equal_clean_run": got.alerts == expected.alerts,
        "features_equal_clean_run": got.features == expected.features,
    }
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items() if k != "env"}
        | {"server_settings": options.env},
        "machine": e2e.machine(),
        "events": distinct,
        "customers_loaded": loaded_customers,
        "feature_states_loaded": int(loaded),
        "alerts": len(got.alerts),
        "restarts": restarts,
        "summary": {
            name: {
                "median": statistics.median(r[name] for r in restarts),
                "min": min(r[name] for r in restarts),
                "max": max(r[name] for r in restarts),
            }
            for name in ("serving_s", "ready_s", "processing_s")
        },
        "checks": checks,
        "ok": all(checks.values()),
    }
