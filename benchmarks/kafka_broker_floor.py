"""What the broker spends an event before a worker does anything with it: the floor under
``kafka_scaling.py``'s broker CPU per event.

A real single-node broker (the tests' own) gets the same simulated bank traffic through the
ingest path as ``kafka_scaling.py`` writes it (the events topic and the stages topic, lz4, in
ingest's transactions). Then, on that same broker and those same records, three readers each
take every input record once, as a process worker's consumer takes them (one consumer in the
group, ``read_committed``, in batches):

- ``read``: the reader only reads (its offsets are never committed): a fetch's cost;
- ``read + commit``: the reader also commits its offsets in a transaction every ``BATCH``
  records it takes, as a worker commits a take (``worker.BATCH``), and writes nothing else: the
  transactions' cost;
- ``worker``: one real ``ringfence serve process`` worker (``kafka_scaling.one_run``).

Each reader runs in rounds, in turn, after ``--warmup`` rounds not counted (the broker's JIT),
each on a consumer group of its own; the broker's CPU is read from ``/proc`` over the reader's
pass (its group join and close included, so a reader is charged more, not less) and divided by
the events. A reader's pass takes a second or two, the worker's run some twenty: what the broker
spends by the second, clients or not, is measured apart (``idle``, its cores with no client)
and falls on the worker's figure alone. Medians of the rounds, ranges beside them.

    .venv/bin/python benchmarks/kafka_broker_floor.py --events 200000 --rounds 3 --warmup 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT))  # tests.helpers: the broker and PostgreSQL the tests use
sys.path.insert(0, str(ROOT / "benchmarks"))

import kafka_scaling  # noqa: E402  (the same traffic, ingest path and worker run)

QUIET_S = 3.0  # no record for this long: the reader has taken everything
IDLE_S = 20.0


def read_all(env: dict[str, str], commit: bool, expected: int | None) -> dict[str, Any]:
    """Take every record of the process group's input topics once; return how many, and the
    seconds from the first to the last."""
    from confluent_kafka import Consumer, Producer

    from ringfence.config import load_settings
    from ringfence.engine.pack import load_pack_file
    from ringfence.engine.stages import plan_stages
    from ringfence.runtimes.kafka.topics import TRANSACTIONAL_RETRIES, client_config, take, topics_of
    from ringfence.runtimes.kafka.worker import BATCH

    settings = load_settings(environ=env)
    topics = topics_of(settings)
    plan = plan_stages(load_pack_file(None))
    inputs = sorted({topics.stage_input(n) for n in plan.names} | {topics.join})
    name = f"floor-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": name,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
            },
        )
    )
    producer = None
    if commit:
        producer = Producer(
            client_config(
                settings,
                **{"transactional.id": name, "enable.idempotence": True, "acks": "all", **TRANSACTIONAL_RETRIES},
            )
        )
        producer.init_transactions(60)
    consumer.subscribe(inputs)
    taken = commits = 0
    first = last = 0.0
    try:
        while True:
            messages = take(consumer, BATCH, 0.2)
            now = time.monotonic()
            if not messages:
                if taken and (taken == expected or now - last > QUIET_S):
                    break
                continue
            if not taken:
                first = now
            last = now
            taken += len(messages)
            if producer is not None:  # a transaction a take, as a worker behind commits
                producer.begin_transaction()
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()), consumer.consumer_group_metadata()
                )
                producer.commit_transaction(60)
                commits += 1
    finally:
        consumer.close()
    return {"records": taken, "seconds": last - first, "commits": commits}


def reader_run(env: dict[str, str], broker_pid: int, events: int, commit: bool, expected: int | None) -> dict[str, Any]:
    from ringfence.bench import procstat

    before = procstat.cpu_seconds([broker_pid])
    jvm_before = procstat.jvm_own_cpu_seconds(broker_pid)
    got = read_all(env, commit, expected)
    # the quiet wait at the end is idle fetching: charged, as a worker's idle polls would be
    cpu = procstat.cpu_seconds([broker_pid]) - before
    jvm = procstat.jvm_own_cpu_seconds(broker_pid) - jvm_before
    return {
        "reader": "read + commit" if commit else "read",
        **got,
        "events_per_s": round(events / got["seconds"]) if got["seconds"] else None,
        "broker_cpu_us_per_event": round(cpu / events * 1e6, 1),
        "broker_jvm_cpu_us_per_event": round(jvm / events * 1e6, 1),
    }


def idle_cores(broker_pid: int) -> float:
    """The broker's CPU over ``IDLE_S`` with no client: what it spends by the second (timers,
    its controller, checkpoints), whatever the load."""
    from ringfence.bench import procstat

    time.sleep(5)  # the last run's clients gone
    before = procstat.cpu_seconds([broker_pid])
    time.sleep(IDLE_S)
    return (procstat.cpu_seconds([broker_pid]) - before) / IDLE_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three readers counted")
    parser.add_argument("--warmup", type=int, default=2, help="rounds first, not counted (the broker's JIT)")
    parser.add_argument("--out", type=Path, default=None, help="write kafka-broker-floor.json here")
    args = parser.parse_args()

    from tests.helpers.servers import kafka_and_postgres

    work = Path(tempfile.mkdtemp(prefix="rf-kafka-floor-"))
    with kafka_and_postgres(work) as (broker, cluster):
        assert broker.proc is not None
        pid = broker.proc.pid
        env, dsn, key, events = kafka_scaling.prepare(broker.bootstrap, cluster, args.events)
        ringfence = [sys.executable, "-m", "ringfence"]
        # the readers' records: written once, through ingest, under a prefix of their own
        readers_env = {**env, "RINGFENCE_KAFKA_TOPIC_PREFIX": f"f{uuid.uuid4().hex[:8]}"}
        subprocess.run([*ringfence, "kafka", "init"], env=readers_env, check=True, capture_output=True)
        kafka_scaling.produce(readers_env, events)
        expected = None
        rounds: list[list[dict[str, Any]]] = []
        for i in range(args.warmup + args.rounds):
            this = []
            for commit in (False, True):
                run = reader_run(readers_env, pid, len(events), commit, expected)
                expected = expected or run["records"]
                this.append(run)
            worker = kafka_scaling.one_run(env, dsn, events, 1, work, pid, key, broker.workdir / "data")
            this.append({"reader": "worker", **worker})
            print(f"{'warm-up' if i < args.warmup else 'round'} {i + 1}: {json.dumps(this)}")
            rounds.append(this)
        idle = idle_cores(pid)
    counted = rounds[args.warmup :]

    def summary(reader: str) -> dict[str, Any]:
        runs = [r for this in counted for r in this if r["reader"] == reader]
        cpu = [r["broker_cpu_us_per_event"] for r in runs]
        return {"broker_cpu_us_per_event": statistics.median(cpu), "range": [min(cpu), max(cpu)]}

    medians = {reader: summary(reader) for reader in ("read", "read + commit", "worker")}
    worker = medians["worker"]["broker_cpu_us_per_event"]
    worker_rate = statistics.median(r["events_per_s"] for this in counted for r in this if r["reader"] == "worker")
    result = {
        "command": "benchmarks/kafka_broker_floor.py "
        f"--events {args.events} --rounds {args.rounds} --warmup {args.warmup}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "partitions": kafka_scaling.PARTITIONS,
        "input_records": expected,
        "median": medians,
        # what the broker spends by the second with no client, as µs an event at the worker's pace
        "idle_broker_cores": round(idle, 3),
        "idle_us_per_event_at_the_workers_pace": round(idle / worker_rate * 1e6, 1),
        "share_of_the_workers": {
            reader: round(medians[reader]["broker_cpu_us_per_event"] / worker, 2)
            for reader in ("read", "read + commit")
        },
        "rounds": counted,
        "warmup_rounds": rounds[: args.warmup],
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kafka-broker-floor.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
