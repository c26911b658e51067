"""A hot key shared by every shard on the aws runtime: what its races cost, and whether any
event is lost to them.

Credential stuffing from one address (or a carrier's NAT address that thousands of customers
share) puts failed logins of many customers, so of every shard, on one key: the address's
``failed_customers_by_ip_10m`` state. Each shard's chunks then write that key's item in their
transactions, and shards processed at once lose races on it. This benchmark runs every shard
at once (a thread a shard, each with its own runtime, as Lambda runs a container a shard)
against moto, with a fraction of the events made failed logins from one address, and counts
the races lost, the invocations that failed and the records Lambda would give up on, then
checks the alerts against the same events run a shard at a time.

moto serialises writes and is slower than DynamoDB, so its counts of races are no forecast of
AWS's; what carries over is whether the races stay bounded and every event is processed.

    .venv/bin/python benchmarks/aws_hot_key.py --events 3000 --shards 4 --hot 0.2 --runs 3 \\
        --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers: moto, API Gateway events


class _Counts(logging.Handler):
    """Counts the processor's lost races and failed chunks from its log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.conflicts = 0
        self.failed_chunks = 0
        self.outboxes_waiting = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        with self._lock:
            if "commit conflict" in message:
                self.conflicts += 1
            elif "failed; Lambda retries" in message:
                self.failed_chunks += 1
            elif "waits for the next invocation" in message:
                self.outboxes_waiting += 1


def one_run(events: list[dict[str, Any]], shards: int, batch: int, at_once: bool) -> dict[str, Any]:
    from tests.helpers.aws import AUDIT_KEY, HOT_IP, ingest

    from ringfence.alerts.model import AlertQuery
    from ringfence.config import load_settings
    from ringfence.runtimes.aws.capacity import UnitMeter
    from ringfence.runtimes.aws.handlers import AwsRuntime, process_event
    from ringfence.runtimes.aws.local import KinesisSource, drain_at_once, provision
    from ringfence.runtimes.aws.resources import AwsClients

    clients = AwsClients("us-east-1")
    names = provision(clients, f"hot{uuid.uuid4().hex[:8]}", shards)
    settings = load_settings(environ={})
    runtime = AwsRuntime.create(names, settings, clients, AUDIT_KEY)
    ingest(runtime, events)

    counts = _Counts()
    logger = logging.getLogger("ringfence.aws.processor")
    logger.addHandler(counts)
    logger.setLevel(logging.INFO)
    given_up: list[dict[str, Any]] = []
    shard_ids = KinesisSource(clients.kinesis, names.stream, lambda e: {}).shard_ids()
    sources, meters = [], []
    for group in [(s,) for s in shard_ids] if at_once else [tuple(shard_ids)]:
        container = AwsRuntime.create(names, settings, AwsClients("us-east-1"), AUDIT_KEY)
        meters.append(UnitMeter())  # a container's own: they run at once
        meters[-1].attach(container.clients.dynamodb)
        handler = lambda e, rt=container: process_event(rt, e)  # noqa: E731
        sources.append(KinesisSource(container.clients.kinesis, names.stream, handler, batch, shards=group))
        sources[-1].on_failure = given_up.append
    started = time.perf_counter()
    drain_at_once(sources, timeout_s=3600)
    elapsed = time.perf_counter() - started
    logger.removeHandler(counts)
    # hits that lost every race wait in their outbox for the shard's next invocation, which
    # this run has none of: the tick (every minute on AWS) finishes them
    still_waiting = sum(len(runtime.state.outbox(s)) for s in shard_ids)
    if still_waiting:
        runtime.processor.tick()
    assert all(runtime.state.outbox(s) == [] for s in shard_ids)

    alerts: dict[str, tuple[str, int]] = {}
    cursor = None
    while True:
        page, cursor = runtime.alerts.list_alerts(AlertQuery(limit=500, cursor=cursor))
        alerts.update({a.id: (a.rule_id, a.count) for a in page})
        if cursor is None:
            break
    n = len(events)
    return {
        "shards_at_once": at_once,
        "events": n,
        "hot_events": sum(1 for e in events if e.get("data", {}).get("ip") == HOT_IP),
        "events_per_s": n / elapsed,
        "invocations": sum(s.invocations for s in sources),
        "conflicts": counts.conflicts,
        "conflicts_per_event": counts.conflicts / n,
        "failed_chunks": counts.failed_chunks,
        "outboxes_waiting": counts.outboxes_waiting,
        "outboxes_left_for_the_tick": still_waiting,
        "records_given_up": sum(f["KinesisBatchInfo"]["batchSize"] for f in given_up),
        "write_units_per_event": sum(m.write_units for m in meters) / n,  # cancelled transactions too
        "read_units_per_event": sum(m.read_units for m in meters) / n,
        "alerts": len(alerts),
        "hits": sum(count for _, count in alerts.values()),
        "_alerts": alerts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--hot", type=float, default=0.2, help="the fraction of events from the hot address")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--code", default="", help="what code ran (a commit), kept in the results")
    args = parser.parse_args()

    from tests.helpers.aws import with_hot_address
    from tests.helpers.servers import local_aws

    from ringfence.simulate import Traffic

    runs = []
    with local_aws(Path(tempfile.mkdtemp(prefix="ringfence-moto-"))):
        for i in range(args.runs):
            traffic = Traffic(seed=200 + i, customers=args.customers, fraud_rate=0.01, source_prefix=f"hot{i}")
            base = list(traffic.stream(start=time.time() - 3600, rate_per_s=50.0, count=args.events))
            events = with_hot_address(base, args.hot, seed=i)
            together = one_run(events, args.shards, args.batch, at_once=True)
            apart = one_run(events, args.shards, args.batch, at_once=False)
            mine, theirs = together.pop("_alerts"), apart.pop("_alerts")
            runs.append(
                {
                    "together": together,
                    "a_shard_at_a_time": apart,
                    "same_alert_ids": sorted(mine) == sorted(theirs),
                    # a count over several customers' events (an address's) depends on how the
                    # shards interleave; any other must be the same
                    "rules_with_other_counts": sorted({mine[a][0] for a in mine if theirs.get(a) != mine[a]}),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    numeric = [k for k, v in runs[0]["together"].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    result = {
        "command": "benchmarks/aws_hot_key.py " + " ".join(sys.argv[1:]),
        "code": args.code,
        "median_together": {k: statistics.median(r["together"][k] for r in runs) for k in numeric},
        "median_a_shard_at_a_time": {k: statistics.median(r["a_shard_at_a_time"][k] for r in runs) for k in numeric},
        "runs": runs,
    }
    print(json.dumps(result["median_together"], indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "aws-hot-key.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
