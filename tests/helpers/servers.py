"""Real servers for integration tests and benchmarks, started on 127.0.0.1 and stopped after:
a single-node Apache Kafka broker (KRaft mode) run from the broker jars on Maven Central, and
a throwaway PostgreSQL cluster from Debian's ``postgresql`` package.

Each raises :class:`Unavailable` when this machine lacks what it needs (Java and Maven; the
PostgreSQL server binaries), so a fixture can skip on a laptop and fail under ``CI=true``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence.bench.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = ROOT / "scripts" / "kafka" / "pom.xml"
JARS = ROOT / ".cache" / "kafka-jars"


class Unavailable(Exception):
    """This machine cannot run the server (a missing program, named in the message)."""


def unavailable(reason: str) -> None:
    """Skip an integration test on a laptop without what it needs; fail it in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"integration tests must run in CI: {reason}")
    pytest.skip(reason)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the server did not listen on {port} in {timeout_s:.0f} s: {log.read_text()[-3000:]}")


def kafka_jars() -> Path:
    """The broker's jars, fetched from Maven Central once (``mvn dependency:copy-dependencies``)."""
    if JARS.is_dir() and any(JARS.glob("kafka_2.13-*.jar")):
        return JARS
    for program in ("java", "mvn"):
        if shutil.which(program) is None:
            raise Unavailable(f"{program} is not installed: the Kafka broker runs from Maven Central's jars")
    JARS.parent.mkdir(parents=True, exist_ok=True)
    # each pytest-xdist worker starts a broker of its own: one fetches, the others wait for it
    with JARS.with_name("kafka-jars.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if JARS.is_dir() and any(JARS.glob("kafka_2.13-*.jar")):
            return JARS
        partial = JARS.with_name("kafka-jars.partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(  # nosec B603 B607 - a fixed command
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(KAFKA_POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={partial}",
            ],
            check=True,
            timeout=600,
        )
        partial.rename(JARS)
    return JARS


class KafkaBroker:
    """One KRaft node, broker and controller, with transactions usable on a single replica."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = workdir / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _java(self, *args: str) -> list[str]:
        return ["java", "-Xms256m", "-Xmx768m", "-cp", f"{kafka_jars()}/*", *args]

    def start(self, timeout_s: float = 90.0) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.workdir / 'data'}",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # a killed worker's open transaction is aborted within seconds, not the default minute
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
                    "auto.create.topics.enable=false",
                    "",
                ]
            )
        )
        # a cluster id is 16 random bytes in URL-safe base64; one starting with "-" would read as an option
        cluster = "-"
        while cluster.startswith("-"):
            cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(  # nosec B603 - our own arguments
            self._java("kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if formatted.returncode != 0:
            raise RuntimeError(f"formatting the broker's storage failed: {formatted.stdout}{formatted.stderr}")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=out, stderr=out)  # nosec B603
        _wait_for_port(self.port, self.proc, self.log, timeout_s)
        return self.bootstrap

    def stop(self) -> None:
        """Kill it: its log is thrown away with it, and a controlled shutdown took the test
        session's end some 20 s (the benchmarks' too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise Unavailable("the PostgreSQL server is not installed (Debian: apt-get install postgresql)")
    return Path(found[-1]).parent


class PostgresCluster:
    """A throwaway cluster: ``initdb`` into a temporary directory, served on 127.0.0.1 only."""

    def __init__(self, workdir: Path) -> None:
        if os.geteuid() == 0:
            # run as the package's user, which cannot enter root's private temporary directories
            workdir = Path(tempfile.mkdtemp(prefix="ringfence-postgres-"))
            shutil.chown(workdir, "postgres", "postgres")
            self._remove = True
        else:
            self._remove = False
        self.workdir = workdir
        self.port = free_port()
        self.data = workdir / "data"
        self.log = workdir / "postgres.log"
        self.user = "ringfence"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dsn = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """Create an empty database on the cluster; return its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name made here, not input
        return self.dsn.rsplit("/", 1)[0] + f"/{name}"

    def _as_owner(self, *command: str) -> list[str]:
        """initdb and postgres refuse to run as root: run them as the package's user then."""
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def start(self, timeout_s: float = 60.0) -> str:
        binaries = _postgres_bin()
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(  # nosec B603 - our own arguments
            self._as_owner(
                str(binaries / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(  # nosec B603 - our own arguments
                self._as_owner(
                    str(binaries / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.workdir),
                ),
                stdout=out,
                stderr=out,
            )
        _wait_for_port(self.port, self.proc, self.log, timeout_s)
        return self.dsn

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # pg_ctl signals the server itself (a signal to runuser would stop at runuser)
            subprocess.run(  # nosec B603 - our own arguments
                self._as_owner(str(_postgres_bin() / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast"),
                capture_output=True,
                timeout=60,
                check=False,
            )
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._remove:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def kafka_and_postgres(workdir: Path) -> Iterator[tuple[KafkaBroker, PostgresCluster]]:
    """A broker and a PostgreSQL server under ``workdir``, stopped however the block ends (the benchmarks')."""
    broker, cluster = KafkaBroker(workdir / "kafka"), PostgresCluster(workdir / "postgres")
    broker.start()
    try:
        cluster.start()
        try:
            yield broker, cluster
        finally:
            cluster.stop()
    finally:
        broker.stop()


class MotoServer:
    """A local AWS endpoint: moto in server mode (through ``tests/aws/moto_server.py``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        launcher = ROOT / "tests" / "aws" / "moto_server.py"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(  # nosec B603 - our own interpreter and arguments
                [sys.executable, str(launcher), "-H", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=out
            )
        _wait_for_port(self.port, self.proc, self.log, timeout_s)
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # an emulator with nothing to save (asked nicely, it waits on idle connections)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def local_aws(workdir: Path, region: str = "us-east-1") -> Iterator[str]:
    """moto on 127.0.0.1 with boto3 pointed at it (``AWS_*`` variables, as they were after);
    yields its URL."""
    server = MotoServer(workdir)
    url = server.start()
    settings = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # moto's fixed test credentials
        "AWS_REGION": region,
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
