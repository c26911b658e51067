"""The kafka runtime as users run it: ``ringfence`` services as separate processes."""

from __future__ import annotations

import os
import secrets
import signal
import struct
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ringfence.bench.servers import free_port, wait_until_healthy

PARTITIONS = 4  # of each topic


CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
CONTROL_BATCH = 0x20  # a transaction marker: never compressed


def stored_codecs(data_dir: Path, prefix: str, kinds: tuple[str, ...], min_bytes: int = 1024) -> Counter[str]:
    """The compression of the record batches of ``min_bytes`` or more a broker holds (its log
    segments, read from disk, as written) for the topics of ``kinds`` (``join``,
    ``changelog``…) under ``prefix``, by codec; transaction markers left out (librdkafka sends a
    batch that compression would not shrink as it is). A batch: base offset (8 bytes), length
    (4), leader epoch (4), magic (1), CRC (4), attributes (2), the codec in their low 3 bits."""
    found: Counter[str] = Counter()
    for segment in data_dir.glob(f"{prefix}.*-*/*.log"):
        if segment.parent.name[len(prefix) + 1 :].split(".")[0] not in kinds:
            continue
        data = segment.read_bytes()
        at = 0
        while at + 23 <= len(data):
            (length,) = struct.unpack_from(">i", data, at + 8)
            if data[at + 16] != 2 or length < 49:
                raise AssertionError(f"{segment}: no record batch of format 2 at byte {at}")
            if at + 12 + length > len(data):
                break  # the broker is still writing it
            (attributes,) = struct.unpack_from(">h", data, at + 21)
            if not attributes & CONTROL_BATCH and length >= min_bytes:
                found[CODECS.get(attributes & 0x7, "unknown")] += 1
            at += 12 + length
    return found


def service_env(bootstrap: str, dsn: str, partitions: int = PARTITIONS, **settings: str) -> dict[str, str]:
    """The environment of the ``ringfence`` services of one deployment: this process's, without
    its ``RINGFENCE_*`` settings, plus the broker, database, partitions and a shared audit key."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")},
        "RINGFENCE_KAFKA_BOOTSTRAP": bootstrap,
        "RINGFENCE_KAFKA_PARTITIONS": str(partitions),
        "RINGFENCE_POSTGRES_DSN": dsn,
        "RINGFENCE_LOG_LEVEL": "info",  # the workers log when they have their partitions
        "RINGFENCE_SECRET_AUDIT_KEY": secrets.token_hex(32),  # the same for every service
        **{f"RINGFENCE_{name.upper()}": value for name, value in settings.items()},
    }


def kafka_records(url: str, key: str) -> dict[tuple[str, str], float]:
    """A process worker's ``ringfence_kafka_records`` (its ``/metrics`` at ``url``), by
    (direction, topic kind)."""
    return counter_samples(url, key, "ringfence_kafka_records", ("direction", "topic"))


def kafka_requests(url: str, key: str) -> dict[tuple[str, str], float]:
    """A service's ``ringfence_kafka_requests`` (its ``/metrics`` at ``url``), by (client, request)."""
    return counter_samples(url, key, "ringfence_kafka_requests", ("client", "request"))


def counter_samples(url: str, key: str, name: str, labels: tuple[str, str]) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30).text
    return {
        (sample.labels[labels[0]], sample.labels[labels[1]]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == f"{name}_total"
    }


@dataclass
class Service:
    """One running ``ringfence serve`` process."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def kill(self) -> None:
        """kill -9: no shutdown hook runs, no transaction is finished."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class KafkaStack:
    """One test's kafka runtime: its environment (topics, database) and the ``ringfence`` services it started."""

    workdir: Path
    env: dict[str, str]
    running: list[Service] = field(default_factory=list)
    workers: list[Service] = field(default_factory=list)  # the process workers among them

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ringfence", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=180,
            env=self.env,
        )

    def key(self, name: str, *scopes: str) -> str:
        args = [a for s in scopes for a in ("--scope", s)]
        return self.cli("keys", "create", "--name", name, *args).stdout.strip().splitlines()[-1]

    def start(self, name: str, *args: str, http: bool = False, env: dict[str, str] | None = None) -> Service:
        log_path = self.workdir / f"{name}.log"
        extra: list[str] = []
        url = ""
        if http:
            port = free_port()
            extra = ["--port", str(port)]
            url = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "ringfence", "serve", *args, *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.env, **(env or {})},
            )
        service = Service(name, process, log_path, url)
        self.running.append(service)
        if http:
            wait_until_healthy(url, process, log_path, name)
        return service

    def worker(self, worker_id: str) -> Service:
        """A process worker, its ``/metrics`` at its ``url``."""
        port = free_port()
        service = self.start(worker_id, "process", "--worker-id", worker_id, "--metrics-port", str(port))
        service.url = f"http://127.0.0.1:{port}"
        self.workers.append(service)
        return service

    def records_per_event(self, key: str) -> tuple[float, float]:
        """Records the broker served and took per event: what the running workers read, and
        what they and ingest wrote (a key with ``alerts:read``). Ingest's records are the events
        and stage records the workers read: in a run without failures, each is read once."""
        counted: dict[tuple[str, str], float] = {}
        for worker in self.workers:
            for label, n in kafka_records(worker.url, key).items():
                counted[label] = counted.get(label, 0.0) + n
        events = counted[("read", "events")]
        read = sum(n for (direction, _), n in counted.items() if direction == "read")
        written = sum(n for (direction, _), n in counted.items() if direction == "written")
        ingested = events + counted.get(("read", "stage"), 0.0)
        return read / events, (written + ingested) / events

    def services(self, *workers: str) -> tuple[str, Service, Service]:
        """A producer key with read access, ingest, api, the given workers and a dispatcher."""
        key = self.key("producer", "events:write", "alerts:read")
        ingest = self.start("ingest", "ingest", http=True)
        api = self.start("api", "api", http=True)
        for worker_id in workers:
            self.worker(worker_id)
        self.start("dispatch", "dispatch")
        return key, ingest, api

    def unprocessed(self) -> int:
        """Records the process group has not committed past, over all its input topics: the
        events, the stages' and the join's. A dead worker's open transaction holds records there
        that no ``read_committed`` reader gets until the broker aborts it, so the alerts can stop
        changing for seconds while the events topic shows no lag."""
        from confluent_kafka import Consumer, TopicPartition

        from ringfence.config import load_settings
        from ringfence.engine.pack import load_pack_file
        from ringfence.engine.stages import plan_stages
        from ringfence.runtimes.kafka.topics import client_config, topics_of

        settings = load_settings(environ=self.env)
        topics = topics_of(settings)
        inputs = {topics.stage_input(name) for name in plan_stages(load_pack_file(None)).names} | {topics.join}
        partitions = [TopicPartition(topic, p) for topic in sorted(inputs) for p in range(PARTITIONS)]
        # read_uncommitted: the high watermark past open transactions, not the last stable offset
        config = {
            "group.id": topics.group("process"),
            "isolation.level": "read_uncommitted",
            "enable.auto.commit": False,
        }
        consumer = Consumer(client_config(settings, **config))
        try:
            committed = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in consumer.committed(partitions, 10)}
            return sum(
                consumer.get_watermark_offsets(tp, 10)[1] - committed[(tp.topic, tp.partition)] for tp in partitions
            )
        finally:
            consumer.close()

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.env["RINGFENCE_POSTGRES_DSN"], autocommit=True) as conn:
            return list(conn.execute(query, params or None).fetchall())

    def stop_all(self) -> None:
        for service in self.running:
            service.stop()
