"""The broker's CPU per event in steady state: one broker for every run, minutes of paced traffic
(360,000 events a run by default, more with ``--windows``), the ingest path and the process
workers running together, on one set of topics a run.

``kafka_scaling.py`` times a backlog of 200,000 events on fresh topics: runs of 10-20 s, on
a broker still compiling its own code and creating partitions, whose CPU per event varies
±25 % and more with a run's place in the sequence. This is the figure a bank sizes brokers by:

- a real single-node broker (the tests' own) and PostgreSQL are started once for all runs;
- the simulated bank traffic (``--customers``, the default pack) is written to a file first,
  then fed through the ingest path (``KafkaAppender``: its group commit, lz4, transactions)
  at ``--rate`` events a second, in requests of ``--request`` events, by a feeder process of
  the code under test, while ``--workers`` ``ringfence serve process`` workers consume
  (``--workers 0``: ingest alone);
- every ``--window`` seconds the broker's CPU (``/proc``, and how much of it its compiler and
  collector threads took), the workers' and the feeder's CPU and the events ingest acknowledged
  are read; the first ``--warmup`` seconds of a run are not counted, and a window counts only
  when the group keeps up (its lag at the window's end under 2 s of traffic);
- ``--tree`` runs another checkout of Ringfence (its own ``.venv``, as ``scripts/_venv.sh``
  makes it), so the code before a change runs on the same broker, traffic and harness; runs
  of the trees alternate, and the ratio of their medians is the comparison;
- ``--commit-interval-ms 50 100`` runs each ``kafka_commit_interval_ms`` in turn (ingest's and
  the workers' transactions begin at most that often), each tree's default otherwise;
  ``--partitions 2 8`` each partition count of the topics in turn, ``--rate 1000 4000`` each
  rate (its own traffic, event time keeping pace with the wall clock);
- each window also counts the requests ingest's and the workers' Kafka clients sent the broker
  (``ringfence_kafka_requests``, from librdkafka's statistics every 10 s; none from code before
  the metric), per event and by type: at a paced load the broker's CPU follows them.

The broker's CPU per event here is the whole pipeline's (ingest's writes and the workers'
reads, writes and commits), divided by the events ingest acknowledged in the window.

    .venv/bin/python benchmarks/kafka_sustained.py --tree /path/to/before --out benchmarks/results/kafka-sustained.json
    .venv/bin/python benchmarks/kafka_sustained.py --workers 0 --request 50 500 --out ...  # ingest alone, two sizes
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
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

import kafka_scaling  # noqa: E402  (its partitions and its wait for the workers)

PARTITIONS = kafka_scaling.PARTITIONS
REQUEST = 50  # events a request: a card processor's or app backend's batch
IN_FLIGHT = 64  # requests waiting on ingest at most, as concurrent clients would be
KEEPING_UP_S = 2.0  # a window counts when the group's lag at its end is under this much traffic
MEASURED = (  # a window's figures
    "events_per_s",
    "broker_cpu_us_per_event",
    "jvm_cpu_us_per_event",
    "broker_cores",
    "workers_cpu_us_per_event",
    "feeder_cpu_us_per_event",
    "requests_per_event",
    "produce_requests_per_event",
)


# -- the feeder: runs under the code under test's interpreter ---------------------------------


def feed(events_file: Path, rate: float, seconds: float, acked_file: Path, request: int) -> None:
    """Send ``events_file``'s events (a JSON object a line) through the ingest path at ``rate``
    a second for ``seconds``; keep the count ingest acknowledged in ``acked_file``."""
    from ringfence.config import load_settings
    from ringfence.engine.pack import load_pack_file
    from ringfence.engine.stages import plan_stages
    from ringfence.events.decode import validate_event
    from ringfence.metrics import Metrics
    from ringfence.runtimes.kafka.ingest import KafkaAppender

    settings = load_settings()
    plan = plan_stages(load_pack_file(None))
    metrics = Metrics()
    if "metrics" in inspect.signature(KafkaAppender).parameters:
        appender = KafkaAppender(settings, lambda: plan, "bench", metrics)
    else:  # code from before its producer's requests were counted
        appender = KafkaAppender(settings, lambda: plan, "bench")
    acked = refused = 0

    def keep() -> None:  # whole or not at all: the harness reads it at any moment
        sent = {
            labels["request"]: value for name, labels, value in metrics.counters() if name == "ringfence_kafka_requests"
        }
        acked_file.with_suffix(".next").write_text(json.dumps({"acked": acked, "requests": sent}) + "\n")
        os.replace(acked_file.with_suffix(".next"), acked_file)

    async def send(batch: list[Any], slots: asyncio.Semaphore) -> None:
        nonlocal acked, refused
        try:
            await appender.append(batch)
            acked += len(batch)
        except Exception:  # a 503 a client would retry: the run's figures would not hold
            refused += len(batch)
        finally:
            slots.release()

    async def run() -> None:
        slots = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        now = time.time() + 86400  # the traffic's times are its own: accept them all
        started = time.monotonic()
        sent = 0
        last_written = 0.0
        with events_file.open("rb") as lines:
            while (elapsed := time.monotonic() - started) < seconds:
                due = int(elapsed * rate)
                while sent + request <= due:
                    batch = [validate_event(lines.readline(), now) for _ in range(request)]
                    await slots.acquire()
                    task = asyncio.create_task(send(batch, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    sent += request
                if elapsed - last_written >= 0.2:
                    keep()
                    last_written = elapsed
                await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        keep()

    asyncio.run(run())
    appender.close()
    if refused:
        raise SystemExit(f"ingest refused {refused} events")


# -- the harness ------------------------------------------------------------------------------


class Lag:
    """Records of the process group's input topics (events, stages, join) not yet committed:
    by names every tree has (``{prefix}.events.*``, ``.join.*``, group ``{prefix}-process``)
    and the stages' (``.stages.*``, or each stage's ``.stage.*`` before), through one admin client."""

    def __init__(self, bootstrap: str, prefix: str, partitions: int) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.prefix = prefix
        self.group = f"{prefix}-process"
        self.partitions = partitions

    def __call__(self) -> int:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        topics = self.admin.list_topics(timeout=30).topics
        kinds = ("events", "stage", "stages", "join")
        inputs = [t for t in topics if t.startswith(self.prefix + ".") and t.split(".")[1] in kinds]
        tps = [TopicPartition(t, p) for t in inputs for p in range(self.partitions)]
        request = [ConsumerGroupTopicPartitions(self.group, tps)]
        group = self.admin.list_consumer_group_offsets(request)[self.group].result(30)
        ends = self.admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=30)
        high = {(tp.topic, tp.partition): future.result(30).offset for tp, future in ends.items()}
        committed = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in group.topic_partitions}
        return sum(max(0, high[tp] - committed.get(tp, 0)) for tp in high)


def write_traffic(path: Path, count: int, customers: int, rate: float) -> None:
    """``count`` simulated bank events, a JSON object a line, from now at about ``rate`` a second."""
    import msgspec

    from ringfence.simulate import Traffic

    encode = msgspec.json.Encoder().encode
    traffic = Traffic(seed=11, customers=customers, fraud_rate=0.01)
    with path.open("wb") as out:
        for event in traffic.stream(start=time.time(), rate_per_s=rate, count=count):
            out.write(encode(event) + b"\n")


def traffic_for(args: argparse.Namespace, rate: float) -> Path:
    """The run's traffic at ``rate`` (written when first needed): enough for a run, with its
    event time advancing as fast as the wall clock."""
    path = args.work / f"traffic-{rate:g}.jsonl"
    if not path.exists():
        seconds = args.warmup + args.windows * args.window
        write_traffic(path, int(seconds * rate) + 10 * max(args.request), args.customers, rate)
    return path


def read_fed(path: Path) -> dict[str, Any]:
    """What the feeder wrote last: the events ingest acknowledged, its producer's requests by type."""
    try:
        fed: dict[str, Any] = json.loads(path.read_text())
        return fed
    except (FileNotFoundError, ValueError):  # not written yet
        return {"acked": 0, "requests": {}}


def requests_sent(urls: list[str], key: str) -> dict[str, float]:
    """The workers' clients' requests to the broker so far, by type (none from older code)."""
    from tests.helpers.kafka import kafka_requests

    sent: dict[str, float] = {}
    for url in urls:
        for (_, request), n in kafka_requests(url, key).items():
            sent[request] = sent.get(request, 0.0) + n
    return sent


def one_run(
    args: argparse.Namespace,
    tree: Path,
    request: int,
    interval: int | None,
    partitions: int,
    rate: float,
    bootstrap: str,
    cluster: Any,
    broker_pid: int,
    work: Path,
) -> dict[str, Any]:
    from tests.helpers.kafka import service_env

    from ringfence.bench import procstat
    from ringfence.bench.servers import free_port

    python = str(tree / ".venv" / "bin" / "python")
    prefix = f"s{uuid.uuid4().hex[:8]}"
    env = {
        **service_env(bootstrap, cluster.new_database(), partitions),
        "RINGFENCE_KAFKA_TOPIC_PREFIX": prefix,
        "PYTHONPATH": "",
        **({} if interval is None else {"RINGFENCE_KAFKA_COMMIT_INTERVAL_MS": str(interval)}),
    }
    for step in (["db", "migrate"], ["kafka", "init"]):
        subprocess.run([python, "-m", "ringfence", *step], env=env, check=True, capture_output=True, cwd=tree)
    created = subprocess.run(
        [python, "-m", "ringfence", "keys", "create", "--name", "bench", "--scope", "alerts:read"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
    )
    key = created.stdout.strip().splitlines()[-1]  # reads the workers' metrics
    logs = [work / f"{prefix}-w{i}.log" for i in range(args.workers)]
    ports = [free_port() for _ in logs]
    procs = []
    for i, path in enumerate(logs):
        with path.open("wb") as out:
            command = [python, "-m", "ringfence", "serve", "process", "--worker-id", f"{prefix}-w{i}"]
            command += ["--metrics-port", str(ports[i])]
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=tree))
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    lag_of = Lag(bootstrap, prefix, partitions)
    acked_file = work / f"{prefix}.acked"
    feeder = None
    windows: list[dict[str, Any]] = []
    try:
        kafka_scaling.wait_restored(procs, logs)
        seconds = args.warmup + args.windows * args.window
        command = [
            python,
            __file__,
            "feed",
            str(traffic_for(args, rate)),
            str(rate),
            str(seconds),
            str(acked_file),
            str(request),
        ]
        feeder = subprocess.Popen(command, env=env, cwd=tree)
        started = time.monotonic()

        def sample() -> dict[str, Any]:
            fed = read_fed(acked_file)
            sent = requests_sent(urls, key)
            for request, n in fed["requests"].items():
                sent[request] = sent.get(request, 0.0) + n
            return {
                "at": time.monotonic() - started,
                "acked": fed["acked"],
                "requests": sent,
                "broker": procstat.cpu_seconds([broker_pid]),
                "jvm": procstat.jvm_own_cpu_seconds(broker_pid),
                "feeder": procstat.cpu_seconds([feeder.pid]),  # type: ignore[union-attr]
                "workers": procstat.cpu_seconds([p.pid for p in procs]),
            }

        last = sample()
        for i in range(int(seconds // args.window)):
            time.sleep(max(0.0, (i + 1) * args.window - (time.monotonic() - started)))
            for proc in [feeder, *procs]:
                if proc.poll() is not None:
                    raise SystemExit(f"a process of the run exited ({proc.returncode}) {proc.args}")
            now, lag = sample(), (lag_of() if procs else 0)
            events = now["acked"] - last["acked"]
            sent = {r: n - last["requests"].get(r, 0.0) for r, n in now["requests"].items() if n}
            windows.append(
                {
                    "ends_at_s": round(now["at"]),
                    # a window after the warm-up, when the group keeps up (no worker: ingest alone)
                    "counted": i * args.window >= args.warmup and (lag < KEEPING_UP_S * rate or not procs),
                    "events": int(events),
                    "events_per_s": round(events / (now["at"] - last["at"])),
                    "lag_records": lag,
                    **{
                        f"{name}_cpu_us_per_event": round((now[name] - last[name]) / max(events, 1) * 1e6, 1)
                        for name in ("broker", "jvm", "feeder", "workers")
                    },
                    "broker_cores": round((now["broker"] - last["broker"]) / (now["at"] - last["at"]), 3),
                    # librdkafka reports every 10 s: a window's counts are of its span shifted by up to that
                    # none counted: code from before the metric
                    "requests_per_event": round(sum(sent.values()) / max(events, 1), 3) if sent else None,
                    "produce_requests_per_event": round(sent.get("Produce", 0.0) / max(events, 1), 3) if sent else None,
                    "requests_per_s": {
                        r: round(n / (now["at"] - last["at"]), 1) for r, n in sorted(sent.items()) if n > 0
                    },
                }
            )
            print(f"{prefix} {tree.name}: {json.dumps(windows[-1])}", flush=True)
            last = now
        if feeder.wait(timeout=120):
            raise SystemExit(f"the feeder failed ({feeder.returncode})")
    finally:
        for proc in [*procs, *([feeder] if feeder else [])]:
            proc.terminate()
            proc.wait(timeout=60)
    counted = [w for w in windows if w["counted"]]
    if not counted:  # its figures are None: the other runs of the invocation still count
        print(f"{tree}: no window kept up with {rate:g} events/s", file=sys.stderr, flush=True)

    def steady(name: str) -> dict[str, float] | None:
        values = [w[name] for w in counted if w[name] is not None]
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "tree": str(tree),
        "events_a_request": request,
        "commit_interval_ms": interval,  # None: the tree's default
        "partitions": partitions,
        "rate": rate,
        "commit": subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "uncommitted_changes": bool(
            subprocess.run(
                ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        ),
        "events_acked": int(last["acked"]),
        "windows_counted": len(counted),
        **{name: steady(name) for name in MEASURED},
        "windows": windows,
    }


def median_of_runs(figures: list[dict[str, float] | None]) -> float | None:
    """The median of the runs' medians of a figure (None where no run had it)."""
    medians = [f["median"] for f in figures if f is not None]
    return statistics.median(medians) if medians else None


def main() -> None:
    if sys.argv[1:2] == ["feed"]:
        feed(Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5]), int(sys.argv[6]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[2_000.0],
        help="events a second fed through ingest (several: runs of each)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--partitions", type=int, nargs="+", default=[PARTITIONS], help="of every topic (several: runs of each)"
    )
    parser.add_argument(
        "--request", type=int, nargs="+", default=[REQUEST], help="events a request to ingest (several: runs of each)"
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of each run not counted")
    parser.add_argument("--window", type=float, default=30.0, help="seconds a window")
    parser.add_argument("--windows", type=int, default=4, help="windows counted after the warm-up")
    parser.add_argument("--runs", type=int, default=2, help="runs of each tree (alternating)")
    parser.add_argument(
        "--tree", type=Path, action="append", default=[], help="another checkout to run beside this one"
    )
    parser.add_argument(
        "--commit-interval-ms",
        type=int,
        nargs="+",
        default=[None],
        help="kafka_commit_interval_ms of ingest and the workers (several: runs of each; default: the tree's); "
        "code older than the setting (82163ed) refuses it",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the result (JSON) to this file")
    args = parser.parse_args()

    from tests.helpers.servers import kafka_and_postgres

    trees = [*(t.resolve() for t in args.tree), ROOT]
    work = Path(tempfile.mkdtemp(prefix="rf-kafka-sustained-"))
    args.work = work
    for rate in args.rate:  # before the broker starts, as every run's are alike
        traffic_for(args, rate)
    # each run's settings besides its tree: events a request, commit interval, partitions, rate
    variants = list(itertools.product(args.request, args.commit_interval_ms, args.partitions, args.rate))
    runs: list[dict[str, Any]] = []
    with kafka_and_postgres(work) as (broker, cluster):
        assert broker.proc is not None
        for _ in range(args.runs):
            for tree in trees:
                for variant in variants:
                    runs.append(one_run(args, tree, *variant, broker.bootstrap, cluster, broker.proc.pid, work))

    def variant_of(run: dict[str, Any]) -> tuple[Any, ...]:
        return (run["events_a_request"], run["commit_interval_ms"], run["partitions"], run["rate"])

    by_tree = {
        f"{tree}, requests of {request}"
        + ("" if interval is None else f", commit every {interval} ms")
        + ("" if args.partitions == [PARTITIONS] else f", {partitions} partitions")
        + ("" if len(args.rate) == 1 else f", {rate:g} events/s"): {
            name: median_of_runs(
                [
                    r[name]
                    for r in runs
                    if r["tree"] == str(tree) and variant_of(r) == (request, interval, partitions, rate)
                ]
            )
            for name in MEASURED
        }
        for tree in trees
        for request, interval, partitions, rate in variants
    }
    result = {
        "command": "benchmarks/kafka_sustained.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "partitions": args.partitions,
        "rate": args.rate,
        "workers": args.workers,
        "customers": args.customers,
        "median_by_tree": by_tree,
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
