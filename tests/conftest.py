"""Shared fixtures: a real embedded server with keys of each kind."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.store.sql import SqlStore
from tests.helpers.aws import REGION
from tests.helpers.keys import Keys
from tests.helpers.receivers import RecordingReceiver
from tests.helpers.servers import KafkaBroker, PostgresCluster, Unavailable, local_aws, unavailable


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots",
        metavar="DIR",
        default=None,
        help="save the dashboard browser tests' screenshots here (the README's: --screenshots docs/screenshots)",
    )


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server") / "data"


@pytest.fixture(scope="module")
def keys(server_dir: Path) -> Keys:
    return Keys(
        admin=create_key(server_dir, "admin", "admin"),
        producer=create_key(server_dir, "producer", "events:write"),
        reader=create_key(server_dir, "reader", "alerts:read"),
        analyst=create_key(server_dir, "analyst", "alerts:read", "alerts:write"),
    )


@pytest.fixture(scope="module")
def server(server_dir: Path, keys: Keys) -> Iterator[EmbeddedServer]:
    srv = start_server(server_dir)
    yield srv
    assert srv.stop(), srv.log_path.read_text()[-3000:]


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    """A real webhook receiver on 127.0.0.1 that records what it gets."""
    r = RecordingReceiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, for the whole session."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
    except Unavailable as exc:
        unavailable(str(exc))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """A real throwaway PostgreSQL cluster on 127.0.0.1, for the whole session."""
    cluster = PostgresCluster(tmp_path_factory.mktemp("postgres"))
    try:
        cluster.start()
    except Unavailable as exc:
        unavailable(str(exc))
    yield cluster
    cluster.stop()


TEST_AUDIT_KEY = b"test-audit-key-0123456789abcdef0123"  # PostgreSQL stores need the audit secret


@pytest.fixture
def make_pg_store(postgres: PostgresCluster) -> Iterator[Callable[..., SqlStore]]:
    """Makes PostgreSQL stores, each on a fresh, migrated database of the session's cluster."""
    from ringfence.store.postgres import PostgresStore

    made: list[PostgresStore] = []

    def make(audit_key: bytes | None = TEST_AUDIT_KEY) -> PostgresStore:
        store = PostgresStore(postgres.new_database(), audit_key, pool_size=4)
        store.migrate()
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> SqlStore:
    """The same repository contracts, on each store backend (PostgreSQL: a real server)."""
    from ringfence.store.sqlite import SqliteStore

    if request.param == "sqlite":
        return SqliteStore(tmp_path / "store.db")
    make: Callable[..., SqlStore] = request.getfixturevalue("make_pg_store")
    return make()


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto in server mode on 127.0.0.1, one per session; skips without moto, fails under CI=true."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        unavailable("moto[server] and boto3 are not installed")
    with local_aws(tmp_path_factory.mktemp("moto"), REGION) as url:
        yield url
