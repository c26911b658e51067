"""The aws runtime's handlers against a local AWS endpoint (moto server): what one event costs.

Lambda cannot run here and moto is no model of DynamoDB's latency, so the wall-clock rates
below say little about AWS. What carries over is what the handlers *do* per event: their own
CPU time (engine, marshalling, boto3), the AWS calls they make, and the DynamoDB items and
bytes they read and write. docs/deploy-aws.md turns those into shards, concurrency and cost.

    .venv/bin/python benchmarks/aws_local.py --events 4000 --runs 3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers.servers: moto, with one backup per transaction


def one_run(events: list[dict[str, Any]], shards: int, batch: int) -> dict[str, Any]:
    from tests.helpers.aws import AUDIT_KEY, ingest

    from ringfence.config import load_settings
    from ringfence.runtimes.aws.capacity import UnitMeter
    from ringfence.runtimes.aws.handlers import AwsRuntime, process_event
    from ringfence.runtimes.aws.local import KinesisSource, provision
    from ringfence.runtimes.aws.resources import AwsClients

    clients = AwsClients("us-east-1")
    names = provision(clients, f"bench{uuid.uuid4().hex[:8]}", shards)
    runtime = AwsRuntime.create(names, load_settings(environ={}), clients, AUDIT_KEY)
    ingest_meter = UnitMeter()
    ingest_meter.attach(clients.dynamodb)

    started, cpu = time.perf_counter(), time.process_time()
    ingest(runtime, events)
    ingest_s, ingest_cpu = time.perf_counter() - started, time.process_time() - cpu

    ingest_meter.detach(clients.dynamodb)
    meter = UnitMeter()
    meter.attach(clients.dynamodb)
    published = Counter[str]()
    clients.sns.meta.events.register("provide-client-params.sns.Publish", lambda **_: published.update(["Publish"]))
    source = KinesisSource(clients.kinesis, names.stream, lambda e: process_event(runtime, e), batch)
    started, cpu = time.perf_counter(), time.process_time()
    source.drain(timeout_s=3600)
    process_s, process_cpu = time.perf_counter() - started, time.process_time() - cpu
    n = len(events)
    return {
        "events": n,
        "ingest_events_per_s": n / ingest_s,
        "ingest_cpu_ms_per_event": 1000 * ingest_cpu / n,
        "process_events_per_s": n / process_s,
        "process_cpu_ms_per_event": 1000 * process_cpu / n,
        "invocations": source.invocations,
        "dynamodb_calls_per_event": {k: v / n for k, v in sorted(meter.calls.items())},
        "transactions_per_event": meter.calls["TransactWriteItems"] / n,
        "items_written_per_event": meter.items_written / n,
        "bytes_written_per_event": meter.bytes_written / n,
        "keys_read_per_event": meter.keys_read / n,
        "write_units_per_event": meter.write_units / n,
        "read_units_per_event": meter.read_units / n,
        "ingest_read_units_per_event": ingest_meter.read_units / n,
        "alerts_announced": published["Publish"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from tests.helpers.servers import local_aws

    from ringfence.simulate import Traffic

    runs = []
    with local_aws(Path(tempfile.mkdtemp(prefix="ringfence-moto-"))):
        for i in range(args.runs):
            traffic = Traffic(seed=100 + i, customers=args.customers, fraud_rate=0.01, source_prefix="bench")
            events = list(traffic.stream(start=time.time() - 3600, rate_per_s=50.0, count=args.events))
            runs.append(one_run(events, args.shards, args.batch))
            print(json.dumps(runs[-1]), flush=True)
    numeric = [k for k, v in runs[0].items() if isinstance(v, float)]
    result = {
        "command": "benchmarks/aws_local.py " + " ".join(sys.argv[1:]),
        "median": {k: statistics.median(r[k] for r in runs) for k in numeric},
        "runs": runs,
    }
    print(json.dumps(result["median"], indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "aws-local.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
