"""The kafka runtime's ingest-to-alert latency at a paced load, on this machine.

A real single-node broker (Maven Central's jars) and PostgreSQL (Debian's) are started as the
tests start them. Each run starts the runtime as users run it, each service its own process:
``serve ingest`` (HTTP), ``serve api``, W ``serve process`` workers and ``serve dispatch``,
on fresh topics and a fresh database. It then posts simulated bank traffic (the end-to-end
benchmark's, with its injected fraud) to ingest over HTTP, paced at ``--rate`` events/s for
``--seconds``, waits until every alert is in PostgreSQL, and reads them back through the api.

An alert's latency is the time from its event's arrival (the record's timestamp: when ingest
took the first request of the transaction that wrote it, at most an interval before that
transaction began) to the alert's ``created_at``, the time dispatch
takes as it begins the alert's commit in PostgreSQL (the commit's own time is not in it): the
path events topic -> stages topic -> process workers -> join -> alerts topic -> dispatch -> store.
Alerts raised by timers (absences) and alerts whose event arrived during the warm-up are
left out. CPU per event is reported per service, the broker's too (it shares the machine's
two cores with everything else, the load generator included).

    .venv/bin/python benchmarks/kafka_latency.py --rate 2000 --seconds 120 --runs 3 --out benchmarks/results

``--commit-interval-ms 50 100`` runs each interval in turn in every round (the services'
``kafka_commit_interval_ms``), and summarises each: the latency it costs beside the broker's CPU
it saves (``kafka_sustained.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers: the broker, PostgreSQL and services the tests use

CUSTOMERS = 100_000  # as the end-to-end benchmark: a realistic rate of events per customer
BATCH = 100  # events per request: producers post small batches when they are paced
CONCURRENCY = 4
DRAIN_TIMEOUT_S = 600.0


def all_alerts(url: str, key: str) -> list[dict[str, Any]]:
    import httpx

    alerts: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/alerts", params=params).json()
            alerts.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return alerts


def settled(stack: Any, url: str, key: str) -> list[dict[str, Any]]:
    """The alerts, once the process group has consumed everything and dispatch has stopped adding any."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while stack.unprocessed() != 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the process group did not catch up")
        time.sleep(0.5)
    previous: list[dict[str, Any]] | None = None
    while True:
        alerts = all_alerts(url, key)
        if previous is not None and len(alerts) == len(previous):
            return alerts
        if time.monotonic() > deadline:
            raise TimeoutError("dispatch did not settle")
        previous = alerts
        time.sleep(3.0)


def signals_written(env: dict[str, str]) -> dict[tuple[str, str], float]:
    """When each alert signal reached the alerts topic (its record's timestamp, set by the
    worker that committed it), by (rule, event id)."""
    from confluent_kafka import Consumer, TopicPartition

    from ringfence.config import load_settings
    from ringfence.runtimes.kafka import records
    from ringfence.runtimes.kafka.topics import client_config, topics_of

    settings = load_settings(environ=env)
    topics = topics_of(settings)
    config = {"group.id": f"latency-{uuid.uuid4().hex}", "isolation.level": "read_committed"}
    consumer = Consumer(client_config(settings, **config))
    written: dict[tuple[str, str], float] = {}
    try:
        for partition in range(topics.partitions):
            tp = TopicPartition(topics.alerts, partition)
            _, high = consumer.get_watermark_offsets(tp, 30)
            consumer.assign([TopicPartition(topics.alerts, partition, 0)])
            position = 0
            while position < high:
                for message in consumer.consume(1000, 5.0):
                    if message.error() is not None:
                        continue
                    position = message.offset() + 1
                    signal = records.decode_alert(message.value()).signal
                    if signal is not None:
                        written.setdefault((signal.rule_id, signal.event_id), message.timestamp()[1] / 1000.0)
                if consumer.position([tp])[0].offset >= high:
                    break
    finally:
        consumer.close()
    return written


def hops(alerts: list[dict[str, Any]], written: dict[tuple[str, str], float]) -> dict[str, list[float]]:
    """Each timed alert's latency split at the alerts topic: ingest to the workers' commit of
    its signal, and that to the alert's ``created_at`` in dispatch."""
    from ringfence.bench import e2e

    split: dict[str, list[float]] = {"ingest_to_alerts_topic": [], "alerts_topic_to_store": []}
    for alert in alerts:
        ingested = e2e.trigger_ingested_at(alert)
        own = [e for e in alert["evidence"]["events"] if "features" in e]
        at = written.get((alert["rule_id"], own[0]["event_id"])) if own else None
        if ingested is None or at is None:
            continue
        created = datetime.fromisoformat(alert["created_at"]).timestamp()
        split["ingest_to_alerts_topic"].append(at - ingested)
        split["alerts_topic_to_store"].append(created - at)
    return split


def one_run(
    base_env: dict[str, str], dsn: str, traffic: Path, args: argparse.Namespace, work: Path, broker_pid: int
) -> dict[str, Any]:
    from tests.helpers.kafka import KafkaStack

    from ringfence.bench import e2e, procstat

    prefix = f"l{uuid.uuid4().hex[:8]}"
    env = {**base_env, "RINGFENCE_KAFKA_TOPIC_PREFIX": prefix, "RINGFENCE_POSTGRES_DSN": dsn}
    stack = KafkaStack(work / prefix, env)
    stack.workdir.mkdir(parents=True)
    stack.cli("kafka", "init")
    workers = [f"{prefix}-w{i}" for i in range(args.workers)]
    try:
        key, ingest, api = stack.services(*workers)
        while not all("restored" in w.log() for w in stack.workers):
            time.sleep(0.05)
        dispatch = [s for s in stack.running if s.name == "dispatch"]
        services = {"ingest": [ingest], "workers": stack.workers, "dispatch": dispatch}
        pids = {name: [s.process.pid for s in group] for name, group in services.items()} | {"broker": [broker_pid]}
        options = e2e.Options(events=args.rate * args.seconds, batch=BATCH, concurrency=CONCURRENCY, rate=args.rate)
        load = e2e.Load()
        cpu: dict[str, float] = {}

        def measure_cpu() -> None:  # over the load after the warm-up: the broker compiles its code first
            time.sleep(args.warmup)
            before = {name: procstat.cpu_seconds(group) for name, group in pids.items()}
            accepted = load.accepted
            load.enough.wait()
            cpu.update({name: procstat.cpu_seconds(group) - before[name] for name, group in pids.items()})
            cpu["events"] = load.accepted - accepted

        meter = threading.Thread(target=measure_cpu, daemon=True)
        started_wall, started = time.time(), time.monotonic()
        meter.start()
        asyncio.run(e2e.drive(ingest, key, e2e.read_batches(traffic, BATCH), options, load))  # type: ignore[arg-type]
        sent_s = time.monotonic() - started
        load.enough.set()
        meter.join()
        alerts = settled(stack, api.url, key)
        split = hops(alerts, signals_written(env))
    finally:
        stack.stop_all()
    latencies = [latency for at, latency in e2e.alert_latencies(alerts, started_wall) if at >= args.warmup]
    return {
        "workers": args.workers,
        "commit_interval_ms": int(env["RINGFENCE_KAFKA_COMMIT_INTERVAL_MS"]),
        "events": load.accepted,
        "accepted_events_per_s": round(load.accepted / sent_s),
        "overload_503s": load.overloaded,
        "alerts": len(alerts),
        "alerts_timed": len(latencies),
        "alerts_by_rule": dict(Counter(a["rule_id"] for a in alerts).most_common()),
        "ingest_to_alert_s": {name: round(e2e.percentile(latencies, q), 4) for name, q in e2e.QUANTILES}
        | {"max": round(max(latencies, default=float("nan")), 4)},
        "hops_p50_p99_s": {
            hop: [round(e2e.percentile(values, 0.5), 4), round(e2e.percentile(values, 0.99), 4)]
            for hop, values in split.items()
        },
        "cpu_us_per_event_after_warmup": {
            name: round(seconds / cpu["events"] * 1e6) for name, seconds in cpu.items() if name != "events"
        },
        "latencies": [[round(at, 2), round(latency, 4)] for at, latency in e2e.alert_latencies(alerts, started_wall)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=2_000, help="events/s, paced")
    parser.add_argument("--seconds", type=int, default=120, help="of load in each run")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds whose alerts are left out")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="rounds (of each interval)")
    parser.add_argument(
        "--commit-interval-ms", type=int, nargs="+", default=[50], help="kafka_commit_interval_ms (several: in turn)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write kafka-latency.json here")
    args = parser.parse_args()

    from tests.helpers.kafka import PARTITIONS, KafkaStack, service_env
    from tests.helpers.servers import kafka_and_postgres

    from ringfence.bench import e2e

    work = Path(tempfile.mkdtemp(prefix="rf-kafka-latency-"))
    options = e2e.Options(events=args.rate * args.seconds, customers=CUSTOMERS, event_rate=float(args.rate))
    traffic = e2e.traffic_file(options, work)
    runs = []
    with kafka_and_postgres(work) as (broker, cluster):
        for i in range(args.runs):
            for interval in args.commit_interval_ms:
                dsn = cluster.new_database()
                base_env = service_env(broker.bootstrap, dsn, kafka_commit_interval_ms=str(interval))
                KafkaStack(work, base_env).cli("db", "migrate")
                assert broker.proc is not None
                run = one_run(base_env, dsn, traffic, args, work, broker.proc.pid)
                runs.append(run)
                print(f"run {i + 1}, {interval} ms: {json.dumps(run)}", flush=True)

    def summary(interval: int) -> dict[str, Any]:
        def spread(pick: Any) -> dict[str, float]:
            values = [pick(r) for r in runs if r["commit_interval_ms"] == interval]
            return {"median": statistics.median(values), "min": min(values), "max": max(values)}

        return {
            **{
                f"{name}_ingest_to_alert_s": spread(lambda r, name=name: r["ingest_to_alert_s"][name])
                for name in ("p50", "p95", "p99", "p99.9")
            },
            "accepted_events_per_s": spread(lambda r: r["accepted_events_per_s"]),
            "alerts_timed": spread(lambda r: r["alerts_timed"]),
            **{
                f"{name}_cpu_us_per_event": spread(lambda r, name=name: r["cpu_us_per_event_after_warmup"][name])
                for name in ("broker", "workers", "ingest", "dispatch")
            },
        }

    result = {
        "command": f"benchmarks/kafka_latency.py --rate {args.rate} --seconds {args.seconds} "
        f"--workers {args.workers} --runs {args.runs} "
        f"--commit-interval-ms {' '.join(map(str, args.commit_interval_ms))}",
        "machine": e2e.machine(),
        "partitions": PARTITIONS,
        "summary": summary(args.commit_interval_ms[0]),
        "summary_by_commit_interval_ms": {interval: summary(interval) for interval in args.commit_interval_ms},
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kafka-latency.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
