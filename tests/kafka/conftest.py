"""The kafka runtime as users run it: ``ringfence`` services as separate processes, against
the session's real Kafka broker and PostgreSQL server, each test on its own topics
(a unique prefix) and its own database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.kafka import KafkaStack, service_env
from tests.helpers.servers import KafkaBroker, PostgresCluster


@pytest.fixture
def kafka_stack(kafka_broker: KafkaBroker, postgres: PostgresCluster, tmp_path: Path) -> Iterator[KafkaStack]:
    env = service_env(
        kafka_broker.bootstrap,
        postgres.new_database(),
        kafka_topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        kafka_snapshot_rows="200",  # so the tests' small state is snapshotted and trimmed, often
    )
    stack = KafkaStack(tmp_path, env)
    stack.cli("db", "migrate")
    stack.cli("kafka", "init")
    yield stack
    stack.stop_all()
