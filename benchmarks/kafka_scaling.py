"""The kafka runtime's process workers: throughput with 1 and 2 workers on this machine.

A real single-node broker (Maven Central's jars) and PostgreSQL (Debian's) are started as the
tests start them. Each run writes the same simulated bank traffic to fresh topics through the
ingest path (every event to the events and stages topics, in transactions), then starts W ``ringfence
serve process`` workers and times them from the moment every worker has its partitions (group
joined, state restored) until the group has consumed every input topic to its end (events, the
stages topic and the join), counting only the events not yet taken when the clock started (a
worker that got its partitions first may have begun). Runs alternate 1 and 2 workers; medians
are reported, and the ratio of the medians is the scaling. The broker shares the machine's two
cores with the workers, so the ratio is a floor for machines where it does not.

Each run also reports the records per event (issue 18's headline figure for this runtime), from
the workers' own counts (``ringfence_kafka_records``, scraped from ``--metrics-port``): read and
written by the workers, by topic kind; ingest's writes are the events and stage records the
workers read (in a run without failures, each exactly once); and the bytes per event each kind
of topic holds in the broker's log segments at the end of the run (``broker_bytes_per_event``).

The broker is started once for all runs, and the first ``--warmup`` runs of each worker count
are not counted: a young JVM spends as much CPU compiling its own code as serving requests (on
this machine its compiler threads were still busy a minute into the runs). Each run reports the
broker's CPU per event, and how much of it its compiler and garbage-collector threads took.

    .venv/bin/python benchmarks/kafka_scaling.py --events 200000 --runs 3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers.servers: the broker and PostgreSQL the tests use

PARTITIONS = 8


def produce(env: dict[str, str], events: list[dict[str, Any]]) -> float:
    """Write ``events`` through the ingest path; return the seconds it took."""
    import msgspec

    from ringfence.config import load_settings
    from ringfence.engine.pack import load_pack_file
    from ringfence.engine.stages import plan_stages
    from ringfence.events.decode import validate_event
    from ringfence.runtimes.kafka.ingest import KafkaAppender

    settings = load_settings(environ=env)
    plan = plan_stages(load_pack_file(None))
    appender = KafkaAppender(settings, lambda: plan, "bench")
    now = time.time() + 86400
    decoded = [validate_event(msgspec.json.encode(e), now) for e in events]

    async def send() -> None:
        batches = [decoded[i : i + 500] for i in range(0, len(decoded), 500)]
        for start in range(0, len(batches), 8):  # 8 requests in flight, as concurrent producers would be
            await asyncio.gather(*(appender.append(b) for b in batches[start : start + 8]))

    started = time.monotonic()
    asyncio.run(send())
    appender.close()
    return time.monotonic() - started


class GroupLag:
    """Records of the process group's input topics not yet consumed, asked through one admin
    client: two requests a call (the group's offsets, the partitions' ends). A consumer made
    for each call, and a request for each partition's end, were half the broker's requests in
    a run, and some of the CPU charged to the workers' events."""

    def __init__(self, env: dict[str, str]) -> None:
        from confluent_kafka.admin import AdminClient

        from ringfence.config import load_settings
        from ringfence.engine.pack import load_pack_file
        from ringfence.engine.stages import plan_stages
        from ringfence.runtimes.kafka.topics import client_config, topics_of

        settings = load_settings(environ=env)
        topics = topics_of(settings)
        plan = plan_stages(load_pack_file(None))
        inputs = sorted({topics.stage_input(n) for n in plan.names} | {topics.join})
        self.group = topics.group("process")
        self.admin = AdminClient(client_config(settings))
        self.partitions = [(t, p) for t in inputs for p in range(PARTITIONS)]

    def __call__(self) -> int:
        """The lag (-1: not known yet, the group coordinator is still loading)."""
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, p in self.partitions]
        try:
            request = [ConsumerGroupTopicPartitions(self.group, tps)]
            group = self.admin.list_consumer_group_offsets(request)[self.group].result(30)
            ends = self.admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=30)
            high = {(tp.topic, tp.partition): future.result(30).offset for tp, future in ends.items()}
        except KafkaException:
            return -1
        committed = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in group.topic_partitions}
        return sum(max(0, high[tp] - committed.get(tp, 0)) for tp in high)


def one_run(
    base_env: dict[str, str],
    dsn: str,
    events: list[dict[str, Any]],
    workers: int,
    work: Path,
    broker_pid: int,
    key: str,
    data_dir: Path,
) -> dict[str, Any]:
    from tests.helpers.kafka import kafka_records

    from ringfence.bench import procstat
    from ringfence.bench.servers import free_port

    prefix = f"b{uuid.uuid4().hex[:8]}"
    env = {**base_env, "RINGFENCE_KAFKA_TOPIC_PREFIX": prefix, "RINGFENCE_POSTGRES_DSN": dsn}
    cli = [sys.executable, "-m", "ringfence"]
    subprocess.run([*cli, "kafka", "init"], env=env, check=True, capture_output=True)
    produce_s = produce(env, events)
    logs = [work / f"{prefix}-w{i}.log" for i in range(workers)]
    ports = [free_port() for _ in logs]
    lag_of = GroupLag(env)
    procs = []
    for i, path in enumerate(logs):
        with path.open("wb") as out:
            command = [*cli, "serve", "process", "--worker-id", f"{prefix}-w{i}", "--metrics-port", str(ports[i])]
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=out))
    try:
        wait_restored(procs, logs)
        started = time.monotonic()
        pids = [p.pid for p in procs] + [broker_pid]
        cpu_before = [procstat.cpu_seconds([pid]) for pid in pids]
        jvm_before = procstat.jvm_own_cpu_seconds(broker_pid)
        # a worker that got its partitions first may have begun: time only what is left
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        done_before = sum(kafka_records(url, key).get(("read", "events"), 0.0) for url in urls)
        while (lag := lag_of()) != 0:
            if time.monotonic() - started > 900:
                raise TimeoutError(f"{lag} records left")
            time.sleep(0.25)
        seconds = time.monotonic() - started
        cpu = [procstat.cpu_seconds([pid]) - before for pid, before in zip(pids, cpu_before, strict=True)]
        jvm = procstat.jvm_own_cpu_seconds(broker_pid) - jvm_before
        counted = [kafka_records(url, key) for url in urls]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=60)
    timed = len(events) - int(done_before)
    if timed < len(events) // 2:
        raise SystemExit(f"the workers took {int(done_before)} events before the clock started: use more (--events)")
    return {
        "workers": workers,
        "events": len(events),
        "events_timed": timed,
        "seconds": round(seconds, 2),
        "events_per_s": round(timed / seconds),
        "ingest_events_per_s": round(len(events) / produce_s),
        # what scales: a worker's CPU per event (the broker's is the cluster's to size)
        "worker_cpu_us_per_event": round(sum(cpu[:-1]) / timed * 1e6),
        "broker_cpu_us_per_event": round(cpu[-1] / timed * 1e6),
        # of which the JVM's compilers and garbage collector (the rest serves requests)
        "broker_jvm_cpu_us_per_event": round(jvm / timed * 1e6),
        **records_per_event(counted, len(events)),
        "broker_bytes_per_event": bytes_per_event(data_dir, prefix, len(events)),
    }


def wait_restored(procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """Until every worker has logged that it has its partitions (group joined, state restored)."""
    while not all("restored" in p.read_text(errors="replace") for p in logs):
        for proc, path in zip(procs, logs, strict=True):
            if proc.poll() is not None:  # never restored: say why rather than wait for ever
                raise SystemExit(f"a worker exited ({proc.returncode}): {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


def bytes_per_event(data_dir: Path, prefix: str, events: int) -> dict[str, int]:
    """What the run's topics hold in the broker's log segments at its end, per event, by topic
    kind (events, stage, join, changelog, alerts…): bytes as written, compressed where the
    producer compressed, before replication. Ingest wrote the events and stages topics."""
    held: dict[str, int] = {}
    for partition in data_dir.glob(f"{prefix}.*-*"):
        kind = partition.name[len(prefix) + 1 :].split(".")[0]
        held[kind] = held.get(kind, 0) + sum(f.stat().st_size for f in partition.glob("*.log"))
    return {kind: round(n / events) for kind, n in sorted(held.items()) if n}


def records_per_event(counted: list[dict[tuple[str, str], float]], events: int) -> dict[str, Any]:
    """Records per event: the workers' reads and writes by topic kind, and ingest's writes."""
    total: dict[tuple[str, str], float] = {}
    for worker in counted:
        for label, n in worker.items():
            total[label] = total.get(label, 0.0) + n

    def per_event(direction: str) -> dict[str, float]:
        return {kind: round(n / events, 3) for (d, kind), n in sorted(total.items()) if d == direction}

    read, written = per_event("read"), per_event("written")
    return {
        "worker_records_read_per_event": round(sum(read.values()), 3),
        "worker_records_written_per_event": round(sum(written.values()), 3),
        "ingest_records_written_per_event": round(read.get("events", 0.0) + read.get("stage", 0.0), 3),
        "records_read_by_kind": read,
        "records_written_by_kind": written,
    }


def prepare(bootstrap: str, cluster: Any, count: int) -> tuple[dict[str, str], str, str, list[dict[str, Any]]]:
    """A deployment's environment on a new database, migrated; a key that reads the workers'
    metrics; and the benchmark's traffic (``count`` events, 5,000 customers, from two hours ago)."""
    from tests.helpers.kafka import service_env

    from ringfence.simulate import Traffic

    dsn = cluster.new_database()
    env = service_env(bootstrap, dsn, PARTITIONS)
    ringfence = [sys.executable, "-m", "ringfence"]
    subprocess.run([*ringfence, "db", "migrate"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [*ringfence, "keys", "create", "--name", "bench", "--scope", "alerts:read"],
        env=env,
        capture_output=True,
        text=True,
    )
    if created.returncode:
        raise SystemExit(f"cannot create a key: {created.stderr}")
    key = created.stdout.strip().splitlines()[-1]
    start = time.time() - 2 * 3600
    events = list(Traffic(seed=11, customers=5_000, fraud_rate=0.01).stream(start=start, rate_per_s=200.0, count=count))
    return env, dsn, key, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each worker count (alternating)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="runs of each worker count first, not counted (the broker's JIT)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write kafka-scaling.json here")
    args = parser.parse_args()

    from tests.helpers.servers import kafka_and_postgres

    work = Path(tempfile.mkdtemp(prefix="rf-kafka-bench-"))
    with kafka_and_postgres(work) as (broker, cluster):
        base_env, dsn, key, events = prepare(broker.bootstrap, cluster, args.events)
        runs: list[dict[str, Any]] = []
        warmup: list[dict[str, Any]] = []
        for i in range(args.warmup + args.runs):
            for workers in (1, 2):
                assert broker.proc is not None
                run = one_run(base_env, dsn, events, workers, work, broker.proc.pid, key, broker.workdir / "data")
                (warmup if i < args.warmup else runs).append(run)
                print(f"{'warm-up' if i < args.warmup else 'run'} {i + 1}: {json.dumps(run)}")
    median = {w: statistics.median(r["events_per_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    result = {
        "command": f"benchmarks/kafka_scaling.py --events {args.events} --runs {args.runs} --warmup {args.warmup}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "partitions": PARTITIONS,
        "median_events_per_s": {str(w): median[w] for w in median},
        "scaling_2_vs_1": round(median[2] / median[1], 2),
        "median_ingest_events_per_s": statistics.median(r["ingest_events_per_s"] for r in runs),
        "median_worker_cpu_us_per_event": statistics.median(r["worker_cpu_us_per_event"] for r in runs),
        "median_broker_cpu_us_per_event": statistics.median(r["broker_cpu_us_per_event"] for r in runs),
        "median_broker_jvm_cpu_us_per_event": statistics.median(r["broker_jvm_cpu_us_per_event"] for r in runs),
        "median_broker_bytes_per_event": {
            kind: statistics.median(r["broker_bytes_per_event"].get(kind, 0) for r in runs)
            for kind in sorted({k for r in runs for k in r["broker_bytes_per_event"]})
        },
        **{
            f"median_{name}": statistics.median(r[name] for r in runs)
            for name in (
                "worker_records_read_per_event",
                "worker_records_written_per_event",
                "ingest_records_written_per_event",
            )
        },
        "runs": runs,
        "warmup_runs": warmup,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kafka-scaling.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
