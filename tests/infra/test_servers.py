"""The servers the kafka runtime's tests and benchmarks run on: started by the test tooling on
127.0.0.1 from Maven Central's broker jars and Debian's PostgreSQL, with the guarantees the
runtime relies on (transactions with read_committed readers; compacted topics; a pooled
PostgreSQL with upserts)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.helpers.servers import KafkaBroker, PostgresCluster

pytestmark = pytest.mark.integration


def test_the_broker_commits_and_aborts_transactions_for_read_committed_readers(kafka_broker: KafkaBroker) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    topic = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    created = admin.create_topics([NewTopic(topic, 2, 1, config={"cleanup.policy": "compact"})])
    created[topic].result(30)
    described = admin.describe_configs([ConfigResource("topic", topic)])
    (config,) = (f.result(30) for f in described.values())
    assert config["cleanup.policy"].value == "compact"

    producer = Producer(
        {"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": f"tx-{topic}", "enable.idempotence": True}
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"rolled back")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(30)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.value())
    consumer.close()
    assert seen == [b"committed"]


def test_the_postgres_cluster_serves_pooled_connections_and_upserts(postgres: PostgresCluster) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(postgres.dsn, min_size=1, max_size=4, open=True) as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (id text PRIMARY KEY, n int NOT NULL)")
            for _ in range(2):
                conn.execute("INSERT INTO t VALUES ('a', 1) ON CONFLICT (id) DO UPDATE SET n = t.n + 1")
        with pool.connection() as conn:
            assert conn.execute("SELECT n FROM t WHERE id = 'a'").fetchone() == (2,)
            host = conn.execute("SELECT inet_server_addr()::text").fetchone()
    assert host == ("127.0.0.1/32",)
